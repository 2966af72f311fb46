//! Which backend serves a model name: the fixed backends (upstream servers) first, then the
//! control plane's deployments, looked up per request so created and deleted deployments take
//! effect at once.

use std::collections::HashMap;
use std::sync::Arc;

use backend::{Backend, ModelInfo};
use control::ControlPlane;

/// The served models. Cheap to clone.
#[derive(Clone)]
pub struct Catalog(Arc<Inner>);

struct Inner {
    fixed: Vec<(String, Arc<dyn Backend>)>,
    by_name: HashMap<String, usize>,
    plane: Option<ControlPlane>,
}

impl Catalog {
    /// `fixed` in the order `/v1/models` lists them; a second backend of the same name is
    /// ignored (with a warning). `plane`: deployments, served after fixed backends of the same
    /// name.
    pub fn new(fixed: Vec<Arc<dyn Backend>>, plane: Option<ControlPlane>) -> Self {
        let mut models = Vec::with_capacity(fixed.len());
        let mut by_name = HashMap::new();
        for backend in fixed {
            let name = backend.info().id;
            if by_name.contains_key(&name) {
                tracing::warn!(model = %name, "two backends serve the same model name; the first wins");
                continue;
            }
            by_name.insert(name.clone(), models.len());
            models.push((name, backend));
        }
        Self(Arc::new(Inner {
            fixed: models,
            by_name,
            plane,
        }))
    }

    /// The fixed backends, in order.
    pub fn fixed(&self) -> impl Iterator<Item = (&str, &Arc<dyn Backend>)> {
        self.0.fixed.iter().map(|(name, b)| (name.as_str(), b))
    }

    /// Every served model: the fixed backends, then the deployments by name.
    pub fn models(&self) -> Vec<ModelInfo> {
        let mut infos: Vec<ModelInfo> = self.fixed().map(|(_, backend)| backend.info()).collect();
        if let Some(plane) = &self.0.plane {
            infos.extend(
                plane
                    .names()
                    .iter()
                    .filter(|name| !self.0.by_name.contains_key(name.as_str()))
                    .filter_map(|name| plane.get(name))
                    .map(|deployment| deployment.info()),
            );
        }
        infos
    }

    /// Every served name, in listing order.
    pub fn names(&self) -> Vec<String> {
        self.models().into_iter().map(|m| m.id).collect()
    }

    /// The backend serving `model`: a fixed backend, else the deployment of that name.
    pub fn backend(&self, model: &str) -> Option<Arc<dyn Backend>> {
        let fixed = self.0.by_name.get(model).and_then(|&i| self.0.fixed.get(i));
        if let Some((_, backend)) = fixed {
            return Some(Arc::clone(backend));
        }
        let deployment = self.0.plane.as_ref()?.get(model)?;
        Some(Arc::new(deployment))
    }

    /// The control plane, if this server runs one.
    pub fn plane(&self) -> Option<&ControlPlane> {
        self.0.plane.as_ref()
    }
}
