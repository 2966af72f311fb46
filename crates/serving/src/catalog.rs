//! Which backend serves a model name: an alias is first read as the name it stands for; then
//! the fixed backends (upstream servers), the model groups (`routing`), then the control
//! plane's deployments, looked up per request so created and deleted deployments and groups
//! take effect at once. A group's deployment members and its fallbacks are resolved here too,
//! per request.
//!
//! Some names are **private** to one tenant (fine-tuned models, `ft:BASE:SUFFIX:JOBID`): they
//! are served like any deployment, but listed and found only for their tenant (and the admin);
//! for every other tenant they do not exist. A key whose allow-list names the base model may
//! use them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use backend::{Backend, ModelInfo};
use control::ControlPlane;
use routing::{Group, Route};

/// What serves a name.
pub enum Target {
    /// A single backend (a fixed one or a deployment).
    Backend(Arc<dyn Backend>),
    /// A model group: one request's route through it.
    Group(Route),
}

impl Target {
    pub fn backend(self) -> Arc<dyn Backend> {
        match self {
            Target::Backend(b) => b,
            Target::Group(route) => Arc::new(route),
        }
    }
}

/// The groups and the aliases of their names.
#[derive(Default)]
struct Groups {
    by_name: HashMap<String, Arc<Group>>,
    /// Alias → the group's name.
    aliases: HashMap<String, String>,
}

/// A served name private to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Private {
    pub tenant_id: String,
    /// The served name of the model it was made from (the allow-lists' name for it).
    pub base: String,
}

/// The served models. Cheap to clone.
#[derive(Clone)]
pub struct Catalog(Arc<Inner>);

struct Inner {
    fixed: Vec<(String, Arc<dyn Backend>)>,
    by_name: HashMap<String, usize>,
    plane: Option<ControlPlane>,
    groups: RwLock<Groups>,
    /// Private names: name → owner.
    private: RwLock<HashMap<String, Private>>,
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
            groups: RwLock::default(),
            private: RwLock::default(),
        }))
    }

    /// The fixed backends, in order.
    pub fn fixed(&self) -> impl Iterator<Item = (&str, &Arc<dyn Backend>)> {
        self.0.fixed.iter().map(|(name, b)| (name.as_str(), b))
    }

    /// Every served model anyone may see (no private name): the fixed backends, the groups
    /// and their aliases (each alias listed under its own name), then the deployments by name.
    pub fn models(&self) -> Vec<ModelInfo> {
        let private = self.private_names();
        let mut all = self.all_models();
        all.retain(|m| !private.contains_key(&m.id));
        all
    }

    /// The served models `tenant` sees: [`Catalog::models`] and its own private ones; the admin
    /// (`None`) sees every name.
    pub fn models_for(&self, tenant: Option<&str>) -> Vec<ModelInfo> {
        let private = self.private_names();
        let mut all = self.all_models();
        all.retain(|m| {
            private
                .get(&m.id)
                .is_none_or(|p| tenant.is_none_or(|t| t == p.tenant_id))
        });
        all
    }

    /// The names `tenant` sees, in listing order.
    pub fn names_for(&self, tenant: Option<&str>) -> Vec<String> {
        self.models_for(tenant).into_iter().map(|m| m.id).collect()
    }

    /// Serves `name` (a deployment) to `private.tenant_id` only.
    pub fn set_private(&self, name: &str, private: Private) {
        let mut names = self.0.private.write().unwrap_or_else(|e| e.into_inner());
        names.insert(name.to_owned(), private);
    }

    /// Forgets the private name `name`; whether it was one.
    pub fn remove_private(&self, name: &str) -> bool {
        let mut names = self.0.private.write().unwrap_or_else(|e| e.into_inner());
        names.remove(name).is_some()
    }

    /// The owner of `name` if it is private.
    pub fn private(&self, name: &str) -> Option<Private> {
        self.private_names().get(name).cloned()
    }

    /// Whether `tenant` (`None`: the admin) may see `name`.
    pub fn visible(&self, name: &str, tenant: Option<&str>) -> bool {
        self.private_names()
            .get(name)
            .is_none_or(|p| tenant.is_none_or(|t| t == p.tenant_id))
    }

    fn private_names(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Private>> {
        self.0.private.read().unwrap_or_else(|e| e.into_inner())
    }

    fn all_models(&self) -> Vec<ModelInfo> {
        let mut infos: Vec<ModelInfo> = self.fixed().map(|(_, backend)| backend.info()).collect();
        {
            let groups = self.groups();
            let mut names: Vec<&String> = groups.by_name.keys().collect();
            names.sort();
            for name in names {
                if self.0.by_name.contains_key(name.as_str()) {
                    continue;
                }
                let group = &groups.by_name[name];
                infos.push(group.info());
                for alias in &group.spec().aliases {
                    infos.push(ModelInfo {
                        id: alias.clone(),
                        ..group.info()
                    });
                }
            }
        }
        if let Some(plane) = &self.0.plane {
            infos.extend(
                plane
                    .infos()
                    .into_iter()
                    .filter(|info| !self.0.by_name.contains_key(info.id.as_str()))
                    .filter(|info| !self.is_group_name(&info.id)),
            );
        }
        infos
    }

    /// Every served name, in listing order.
    pub fn names(&self) -> Vec<String> {
        self.models().into_iter().map(|m| m.id).collect()
    }

    /// The backend serving `model` (an alias read as its group): a fixed backend, a group,
    /// else the deployment of that name.
    pub fn backend(&self, model: &str) -> Option<Arc<dyn Backend>> {
        self.target(model).map(Target::backend)
    }

    /// What serves `model` (an alias read as its group's name, see [`Catalog::canonical`]).
    pub fn target(&self, model: &str) -> Option<Target> {
        let name = self.canonical(model);
        if let Some(backend) = self.single(&name) {
            return Some(Target::Backend(backend));
        }
        let group = self.group(&name)?;
        Some(Target::Group(self.route(group, true)))
    }

    /// The name `model` stands for: its group's name for an alias, else itself.
    pub fn canonical(&self, model: &str) -> String {
        self.groups()
            .aliases
            .get(model)
            .cloned()
            .unwrap_or_else(|| model.to_owned())
    }

    /// A fixed backend or a deployment of that exact name.
    fn single(&self, name: &str) -> Option<Arc<dyn Backend>> {
        let fixed = self.0.by_name.get(name).and_then(|&i| self.0.fixed.get(i));
        if let Some((_, backend)) = fixed {
            return Some(Arc::clone(backend));
        }
        if self.is_group_name(name) {
            return None;
        }
        self.0.plane.as_ref()?.backend(name)
    }

    /// One request's route through `group`: its deployment members as served now, and its
    /// fallbacks (groups among them without their own fallbacks: one level, so fallbacks
    /// cannot loop).
    fn route(&self, group: Arc<Group>, with_fallbacks: bool) -> Route {
        let deployments = group
            .deployment_names()
            .map(|name| name.and_then(|n| self.single(n)))
            .collect();
        let fallbacks = if with_fallbacks {
            group
                .spec()
                .fallbacks
                .iter()
                .filter_map(|name| {
                    let name = self.canonical(name);
                    let backend = match self.single(&name) {
                        Some(b) => b,
                        None => Arc::new(self.route(self.group(&name)?, false)),
                    };
                    Some((name, backend))
                })
                .collect()
        } else {
            Vec::new()
        };
        Route::new(group, deployments, fallbacks)
    }

    fn groups(&self) -> std::sync::RwLockReadGuard<'_, Groups> {
        self.0.groups.read().unwrap_or_else(|e| e.into_inner())
    }

    fn is_group_name(&self, name: &str) -> bool {
        self.groups().by_name.contains_key(name)
    }

    /// The group of that name (not an alias).
    pub fn group(&self, name: &str) -> Option<Arc<Group>> {
        self.groups().by_name.get(name).cloned()
    }

    /// Every group, by name.
    pub fn groups_list(&self) -> Vec<Arc<Group>> {
        let mut all: Vec<Arc<Group>> = self.groups().by_name.values().cloned().collect();
        all.sort_by(|a, b| a.spec().name.cmp(&b.spec().name));
        all
    }

    /// Whether `name` is taken by something other than group `group`: a fixed backend, a
    /// deployment, another group or another group's alias. The message says by what.
    pub fn name_taken(&self, name: &str, group: &str) -> Option<String> {
        if self.0.by_name.contains_key(name) {
            return Some(format!("'{name}' is a fixed model of this server"));
        }
        let groups = self.groups();
        if name != group && groups.by_name.contains_key(name) {
            return Some(format!("'{name}' is another model group"));
        }
        if let Some(owner) = groups.aliases.get(name).filter(|owner| *owner != group) {
            return Some(format!(
                "'{name}' is already an alias of the group '{owner}'"
            ));
        }
        drop(groups);
        let deployed = self
            .0
            .plane
            .as_ref()
            .is_some_and(|p| p.backend(name).is_some());
        deployed.then(|| format!("'{name}' is a deployment"))
    }

    /// Serves `group` under its name and aliases, replacing the group of that name (and its
    /// members' state). The caller checked the names with [`Catalog::name_taken`].
    pub fn set_group(&self, group: Arc<Group>) {
        let mut groups = self.0.groups.write().unwrap_or_else(|e| e.into_inner());
        let name = group.spec().name.clone();
        groups.aliases.retain(|_, owner| *owner != name);
        for alias in &group.spec().aliases {
            groups.aliases.insert(alias.clone(), name.clone());
        }
        groups.by_name.insert(name, group);
    }

    /// Stops serving the group `name` and its aliases; whether it existed.
    pub fn remove_group(&self, name: &str) -> bool {
        let mut groups = self.0.groups.write().unwrap_or_else(|e| e.into_inner());
        groups.aliases.retain(|_, owner| owner != name);
        groups.by_name.remove(name).is_some()
    }

    /// The control plane, if this server runs one.
    pub fn plane(&self) -> Option<&ControlPlane> {
        self.0.plane.as_ref()
    }
}
