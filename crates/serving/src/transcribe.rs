//! Speech to text on the one serving path: the audio is decoded and measured first (a file
//! that is not audio, too long or of an unknown codec is refused before admission and costs
//! nothing), then the same admission as a generation with the audio's whole seconds
//! (`ceil(ms / 1000)`) as the reservation, under the ledger model `audio/<served name>`
//! (priced per minute: `ceil(seconds × per_minute / 60)`), then the backend transcribes and
//! the reservation settles at exactly those seconds.

use std::sync::Arc;

use backend::{ModelKind, TranscribeRequest, Transcription};
use tenancy::Principal;

use crate::embed::not_for;
use crate::error::ServeError;
use crate::logs::{self, Trail};
use crate::meter::Delivery;
use crate::Serving;

/// A transcription request as the wire layer parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionJob {
    pub request_id: String,
    pub model: String,
    /// The uploaded file's bytes.
    pub file: Vec<u8>,
    /// Its name's extension (a hint for the container), if any.
    pub extension: Option<String>,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub temperature: f32,
    pub tenant: Option<String>,
    /// The longest audio accepted, in seconds.
    pub max_seconds: u64,
}

/// A transcription with what it was metered for.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcribed {
    pub transcription: Transcription,
    /// The audio's duration.
    pub duration_ms: u64,
    /// What was metered: `ceil(duration_ms / 1000)`.
    pub seconds: u64,
}

impl Serving {
    /// Transcribes `job`'s audio on a speech model, metered (and logged) for `payer` by audio
    /// seconds.
    pub async fn transcribe(
        &self,
        payer: Option<&Principal>,
        job: TranscriptionJob,
    ) -> Result<Transcribed, ServeError> {
        let mut trail = self.trail(payer, &job.request_id, &job.model);
        let result = self.transcribe_logged(payer, job, &mut trail).await;
        logs::refused(trail, &result);
        result
    }

    async fn transcribe_logged(
        &self,
        payer: Option<&Principal>,
        job: TranscriptionJob,
        trail: &mut Option<Trail>,
    ) -> Result<Transcribed, ServeError> {
        let backend = self.backend_for(payer, &job.model)?;
        let info = backend.info();
        if info.kind != ModelKind::Transcribe {
            return Err(not_for(&info, "transcriptions"));
        }
        let (file, ext, max) = (job.file, job.extension, job.max_seconds);
        let audio = tokio::task::spawn_blocking(move || audio::decode(file, ext.as_deref(), max))
            .await
            .map_err(|e| {
                ServeError::Backend(backend::BackendError::Internal(format!(
                    "audio decoding task failed: {e}"
                )))
            })??;
        let seconds = audio.seconds();
        let units = u32::try_from(seconds).unwrap_or(u32::MAX);
        let ledger_model = tenancy::audio_entry(&job.model);
        let _registration = payer.map(|p| self.running.register(&p.tenant.id, &job.request_id));
        let mut meter = match payer {
            Some(principal) => Some(
                self.admit(
                    principal,
                    (&job.request_id, &ledger_model),
                    (units, 0),
                    (Delivery::Whole, false),
                )
                .await?,
            ),
            None => None,
        };
        if let Some(meter) = &mut meter {
            meter.take_trail(trail);
        }
        let request = TranscribeRequest {
            request_id: job.request_id,
            model: job.model,
            samples: Arc::new(audio.samples),
            language: job.language,
            prompt: job.prompt,
            temperature: job.temperature,
            tenant: job.tenant,
        };
        match backend.transcribe(request).await {
            Ok(transcription) => {
                if let Some(meter) = &mut meter {
                    meter.settle_whole(units).await?;
                }
                Ok(Transcribed {
                    transcription,
                    duration_ms: audio.duration_ms,
                    seconds,
                })
            }
            Err(err) => {
                let err = ServeError::Backend(err);
                if let Some(meter) = &mut meter {
                    meter.fail(&err);
                    meter.release().await;
                }
                Err(err)
            }
        }
    }
}
