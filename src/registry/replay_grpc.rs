//! `flowctl.v1.ReplayService`: an operator asks the daemon for a replay; the registry checks
//! the caller and the range and hands the request to the daemon (see [`Registry::set_replayer`]).

use flowctl_proto::flowctl::v1::replay_service_server::ReplayService;
use flowctl_proto::flowctl::v1::{StartReplayRequest, StartReplayResponse};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::access::Access;
use super::limits;
use super::state::{Registry, ReplayRequest};
use crate::replay::ReplayRange;

/// Letters one replay resolves at most (`flowctl dlq replay --pipeline P --all` asks for
/// one replay per ledger).
const MAX_LETTERS: usize = 1000;

#[derive(Debug, Clone)]
pub struct ReplayServiceImpl {
    registry: Registry,
    access: Access,
}

impl ReplayServiceImpl {
    pub fn new(registry: Registry, access: Access) -> Self {
        ReplayServiceImpl { registry, access }
    }
}

#[tonic::async_trait]
impl ReplayService for ReplayServiceImpl {
    async fn start_replay(
        &self,
        request: Request<StartReplayRequest>,
    ) -> Result<Response<StartReplayResponse>, Status> {
        self.access.manage_runs(&request, "StartReplay")?;
        let request = request.into_inner();
        limits::id("pipeline", &request.pipeline)?;
        if request.pipeline.is_empty() {
            return Err(Status::invalid_argument("pipeline: required"));
        }
        let range = ReplayRange::new(request.from_ledger, request.to_ledger)
            .map_err(Status::invalid_argument)?;
        if request.resolve_dead_letters.len() > MAX_LETTERS {
            return Err(Status::invalid_argument(format!(
                "resolve_dead_letters: {} ids, over the {MAX_LETTERS} one replay takes",
                request.resolve_dead_letters.len()
            )));
        }
        for id in &request.resolve_dead_letters {
            limits::id("resolve_dead_letters", id)?;
        }
        let Some(replayer) = self.registry.replayer() else {
            return Err(Status::failed_precondition(
                "this control plane runs no pipelines (a `flowctl server` or a `flowctl run`); \
                 replay against the daemon's, or in the foreground with \
                 `flowctl replay -f FILE --from-ledger A --to-ledger B`",
            ));
        };
        let (reply, answer) = oneshot::channel();
        let stopping = || Status::unavailable("the daemon is stopping");
        replayer
            .send(ReplayRequest {
                pipeline: request.pipeline,
                range,
                resolve_dead_letters: request.resolve_dead_letters,
                reply,
            })
            .await
            .map_err(|_| stopping())?;
        let (run_id, instance) = answer.await.map_err(|_| stopping())??;
        Ok(Response::new(StartReplayResponse { run_id, instance }))
    }
}
