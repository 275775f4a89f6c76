//! `flowctl.v1.DeadLetterService` over the registry's dead-letter store.
//!
//! Report is a component's call (see [`Access::report_for`]); List and Get are reads;
//! Resolve and Purge are the operator's.

use std::time::SystemTime;

use flowctl_proto::flowctl::v1::dead_letter_service_server::DeadLetterService;
use flowctl_proto::flowctl::v1::{
    DeadLetter, DeadLetterStatus, GetDeadLetterRequest, ListDeadLettersRequest,
    ListDeadLettersResponse, PurgeDeadLettersRequest, PurgeDeadLettersResponse,
    ReportDeadLetterRequest, ReportDeadLetterResponse, ResolveDeadLetterRequest,
};
use tonic::{Request, Response, Status};

use super::access::Access;
use super::dead_letters::{DeadLetterFilter, NewDeadLetter, MAX_PAYLOAD_BYTES};
use super::limits;
use super::state::{Registry, RegistryError};

/// Letters one List answers at most: without payloads a letter is well under 70 KiB
/// (a reason of at most 64 KiB), so this stays below the answer budget.
pub const MAX_LISTED: usize = 1000;
/// The largest reason kept; a longer one is cut (a reason is for people to read).
const MAX_REASON_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct DeadLetterServiceImpl {
    registry: Registry,
    access: Access,
}

impl DeadLetterServiceImpl {
    pub fn new(registry: Registry, access: Access) -> Self {
        DeadLetterServiceImpl { registry, access }
    }
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!(
        "no dead letter has id {id:?} (flowctl dlq ls lists them)"
    ))
}

fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

fn status_filter(value: i32) -> Result<Option<DeadLetterStatus>, Status> {
    match DeadLetterStatus::try_from(value) {
        Ok(DeadLetterStatus::Unspecified) => Ok(None),
        Ok(status) => Ok(Some(status)),
        Err(_) => Err(Status::invalid_argument(format!(
            "status: {value} is not a DeadLetterStatus"
        ))),
    }
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetterServiceImpl {
    async fn report(
        &self,
        request: Request<ReportDeadLetterRequest>,
    ) -> Result<Response<ReportDeadLetterResponse>, Status> {
        let mut pipeline = request.get_ref().pipeline.clone();
        let mut component = request.get_ref().component.clone();
        self.access
            .report_for(&request, &mut pipeline, &mut component)?;
        let report = request.into_inner();
        limits::id("pipeline", &pipeline)?;
        limits::id("component", &component)?;
        limits::id("run_id", &report.run_id)?;
        limits::text("reason", &report.reason, limits::MAX_TEXT_BYTES)?;
        if report.payload.len() > MAX_PAYLOAD_BYTES + limits::MAX_TEXT_BYTES {
            return Err(Status::invalid_argument(format!(
                "payload: {} bytes, over the limit of 1 MiB (cut it and set payload_truncated)",
                report.payload.len()
            )));
        }
        if pipeline.is_empty() || component.is_empty() {
            return Err(Status::invalid_argument(
                "pipeline and component: both are required (only a component the supervisor \
                 started may leave them out)",
            ));
        }
        let run_id = if report.run_id.is_empty() {
            self.registry.active_run_of(&pipeline).unwrap_or_default()
        } else {
            report.run_id
        };
        // A replay's letter is its pipeline's: the same ledger failing again in a replay
        // updates the letter it replays.
        let new = NewDeadLetter {
            pipeline: crate::replay::base_name(&pipeline).to_string(),
            component,
            run_id,
            ledger: report.ledger,
            reason: cut(report.reason, MAX_REASON_BYTES),
            payload: report.payload,
            payload_truncated: report.payload_truncated,
            payload_size: report.payload_size,
        };
        let (mut letter, created) = self
            .registry
            .dead_letters()
            .report(new, SystemTime::now())
            .map_err(RegistryError::from)?;
        tracing::warn!(
            id = %letter.id, pipeline = %letter.pipeline, component = %letter.component,
            ledger = letter.ledger, attempts = letter.attempts, reason = %letter.reason,
            "dead letter"
        );
        letter.payload.clear();
        Ok(Response::new(ReportDeadLetterResponse {
            letter: Some(letter),
            created,
        }))
    }

    async fn list(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        self.access.read(&request)?;
        let req = request.into_inner();
        limits::id("pipeline", &req.pipeline)?;
        limits::id("run_id", &req.run_id)?;
        let limit = match req.limit as usize {
            0 => MAX_LISTED,
            n => n.min(MAX_LISTED),
        };
        let filter = DeadLetterFilter {
            pipeline: Some(req.pipeline).filter(|p| !p.is_empty()),
            run_id: Some(req.run_id).filter(|r| !r.is_empty()),
            status: status_filter(req.status)?,
            // One more than wanted tells whether there are more.
            limit: limit + 1,
        };
        let mut letters = self
            .registry
            .dead_letters()
            .list(&filter)
            .map_err(RegistryError::from)?;
        let truncated = letters.len() > limit;
        letters.truncate(limit);
        Ok(Response::new(ListDeadLettersResponse {
            letters,
            truncated,
        }))
    }

    async fn get(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<DeadLetter>, Status> {
        self.access.read(&request)?;
        let id = request.into_inner().id;
        limits::id("id", &id)?;
        let letter = self
            .registry
            .dead_letters()
            .get(&id)
            .map_err(RegistryError::from)?;
        letter.map(Response::new).ok_or_else(|| not_found(&id))
    }

    async fn resolve(
        &self,
        request: Request<ResolveDeadLetterRequest>,
    ) -> Result<Response<DeadLetter>, Status> {
        self.access.manage_runs(&request, "Resolve")?;
        let id = request.into_inner().id;
        limits::id("id", &id)?;
        let letter = self
            .registry
            .dead_letters()
            .resolve(&id, SystemTime::now())
            .map_err(RegistryError::from)?;
        letter
            .map(|mut l| {
                l.payload.clear();
                Response::new(l)
            })
            .ok_or_else(|| not_found(&id))
    }

    async fn purge(
        &self,
        request: Request<PurgeDeadLettersRequest>,
    ) -> Result<Response<PurgeDeadLettersResponse>, Status> {
        self.access.manage_runs(&request, "Purge")?;
        let req = request.into_inner();
        limits::id("pipeline", &req.pipeline)?;
        let purged = self
            .registry
            .dead_letters()
            .purge(
                req.resolved_only,
                Some(req.pipeline.as_str()).filter(|p| !p.is_empty()),
            )
            .map_err(RegistryError::from)?;
        Ok(Response::new(PurgeDeadLettersResponse { purged }))
    }
}
