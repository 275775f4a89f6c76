//! The two control-plane APIs over one [`Registry`]: `flowctl.ControlPlane` (what the Go
//! components call) and `flowctl.v1.ControlPlaneService`.

use std::collections::HashMap;

use flowctl_proto::flowctl::control_plane_server::ControlPlane;
use flowctl_proto::flowctl::v1::control_plane_service_server::ControlPlaneService;
use flowctl_proto::flowctl::v1::{
    ComponentInfo, ComponentStatusRequest, ComponentStatusResponse, ComponentType,
    DiscoveryRequest, DiscoveryResponse, HeartbeatRequest, ListComponentsRequest,
    ListComponentsResponse, RegisterRequest, RegisterResponse, UnregisterRequest,
};
use flowctl_proto::flowctl::{
    ChunkRun, ChunkStatus, GetChunkRunRequest, ListChunkRunsRequest, ListChunkRunsResponse,
    UpsertChunkRunRequest,
};
use flowctl_proto::flowctl::{
    CreatePipelineRunRequest, GetPipelineRunRequest, ListPipelineRunsRequest,
    ListPipelineRunsResponse, PipelineRun, RegistrationAck, RunStatus, ServiceHeartbeat,
    ServiceInfo, ServiceList, ServiceStatus, ServiceType, StopPipelineRunRequest,
    UpdatePipelineRunRequest,
};
use tonic::{Request, Response, Status};

use super::access::Access;
use super::chunks::{ChunkError, ChunkFilter};
use super::dead_letters::DeadLetterError;
use super::health::HealthStatus;
use super::limits;
use super::state::{
    component_type_of, service_type_of, Api, ComponentRegistration, MetricValue, NewRun,
    Registration, Registry, RegistryError, RunUpdate,
};
use super::store::{system_time_timestamp, RunFilter};

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Status {
        let message = e.to_string();
        match e {
            RegistryError::ServiceNotFound(_) | RegistryError::RunNotFound(_) => {
                Status::not_found(message)
            }
            RegistryError::AmbiguousRun { .. } | RegistryError::InvalidArgument(_) => {
                Status::invalid_argument(message)
            }
            RegistryError::RunExists(_) => Status::already_exists(message),
            RegistryError::NotYours { .. } => Status::permission_denied(message),
            RegistryError::Full(_) => Status::resource_exhausted(message),
            RegistryError::RunEnded { .. } | RegistryError::LiveOwner { .. } => {
                Status::failed_precondition(message)
            }
            RegistryError::StopFailed { .. } => Status::unavailable(message),
            RegistryError::Store(_) => {
                tracing::error!(error = %message, "run store failed");
                Status::internal(message)
            }
            RegistryError::DeadLetters(DeadLetterError::Full { .. }) => {
                Status::resource_exhausted(message)
            }
            RegistryError::DeadLetters(_) => {
                tracing::error!(error = %message, "dead-letter store failed");
                Status::internal(message)
            }
            RegistryError::Chunks(ChunkError::Invalid(_)) => Status::invalid_argument(message),
            RegistryError::Chunks(ChunkError::StaleAttempt { .. }) => {
                Status::failed_precondition(message)
            }
            RegistryError::Chunks(ChunkError::Store(_)) => {
                tracing::error!(error = %message, "chunk store failed");
                Status::internal(message)
            }
        }
    }
}

/// `flowctl.ControlPlane`.
#[derive(Debug, Clone)]
pub struct ControlPlaneV0 {
    registry: Registry,
    access: Access,
}

impl ControlPlaneV0 {
    pub fn new(registry: Registry, access: Access) -> Self {
        ControlPlaneV0 { registry, access }
    }
}

fn service_status(r: &ComponentRegistration) -> ServiceStatus {
    ServiceStatus {
        service_id: r.service_id.clone(),
        service_type: r.service_type as i32,
        is_healthy: r.is_healthy(),
        last_heartbeat: r.last_heartbeat.map(system_time_timestamp),
        metrics: r
            .metrics
            .iter()
            .filter_map(|(k, v)| v.as_f64().map(|n| (k.clone(), n)))
            .collect(),
        component_id: r.component_id.clone(),
    }
}

/// A run as any reader may see it: its pipeline file without secrets.
fn shown(mut run: PipelineRun) -> PipelineRun {
    run.config_yaml = super::redact::config_yaml(&run.config_yaml);
    run
}

fn known_run_status(value: i32, field: &str) -> Result<RunStatus, Status> {
    RunStatus::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("{field}: {value} is not a RunStatus")))
}

#[tonic::async_trait]
impl ControlPlane for ControlPlaneV0 {
    async fn register(
        &self,
        request: Request<ServiceInfo>,
    ) -> Result<Response<RegistrationAck>, Status> {
        let mut component_id = request.get_ref().component_id.clone();
        let owner = self.access.register(&request, &mut component_id)?;
        let mut info = request.into_inner();
        info.component_id = component_id;
        limits::id("service_id", &info.service_id)?;
        limits::id("component_id", &info.component_id)?;
        limits::ids("input_event_types", &info.input_event_types)?;
        limits::ids("output_event_types", &info.output_event_types)?;
        limits::text(
            "health_endpoint",
            &info.health_endpoint,
            limits::MAX_ID_BYTES,
        )?;
        limits::metadata("metadata", &info.metadata)?;
        let service_type =
            ServiceType::try_from(info.service_type).unwrap_or(ServiceType::Unspecified);
        let registration = Registration {
            service_id: info.service_id.clone(),
            component_id: info.component_id.clone(),
            api: Api::V0,
            service_type,
            info: ComponentInfo {
                id: info.service_id,
                name: info.metadata.get("name").cloned().unwrap_or_default(),
                description: String::new(),
                version: info.metadata.get("version").cloned().unwrap_or_default(),
                r#type: component_type_of(service_type) as i32,
                input_event_types: info.input_event_types,
                output_event_types: info.output_event_types.clone(),
                endpoint: info.health_endpoint,
                metadata: info.metadata,
            },
            max_inflight: info.max_inflight,
        };
        let service_id = self.registry.register_owned(registration, owner)?;
        Ok(Response::new(RegistrationAck {
            topic_names: info.output_event_types,
            connection_info: HashMap::from([(
                "heartbeat_interval".to_string(),
                humantime::format_duration(self.registry.config().heartbeat_interval).to_string(),
            )]),
            service_id,
        }))
    }

    async fn heartbeat(&self, request: Request<ServiceHeartbeat>) -> Result<Response<()>, Status> {
        self.access
            .act_for(&request, &request.get_ref().service_id, "Heartbeat")?;
        let hb = request.into_inner();
        limits::id("service_id", &hb.service_id)?;
        limits::metrics("metrics", &hb.metrics)?;
        let metrics = hb
            .metrics
            .into_iter()
            .map(|(k, v)| (k, MetricValue::Number(v)))
            .collect();
        self.registry
            .heartbeat(&hb.service_id, HealthStatus::Unknown, metrics)?;
        Ok(Response::new(()))
    }

    async fn get_service_status(
        &self,
        request: Request<ServiceInfo>,
    ) -> Result<Response<ServiceStatus>, Status> {
        self.access.read(&request)?;
        let info = request.into_inner();
        let id = if info.service_id.is_empty() {
            &info.component_id
        } else {
            &info.service_id
        };
        let status = self
            .registry
            .status(id)
            .ok_or_else(|| RegistryError::ServiceNotFound(id.clone()))?;
        Ok(Response::new(service_status(&status)))
    }

    async fn list_services(&self, request: Request<()>) -> Result<Response<ServiceList>, Status> {
        self.access.read(&request)?;
        let services = self.registry.list().iter().map(service_status).collect();
        Ok(Response::new(ServiceList { services }))
    }

    async fn create_pipeline_run(
        &self,
        request: Request<CreatePipelineRunRequest>,
    ) -> Result<Response<PipelineRun>, Status> {
        self.access.manage_runs(&request, "CreatePipelineRun")?;
        let req = request.into_inner();
        limits::id("run_id", &req.run_id)?;
        limits::id("pipeline_name", &req.pipeline_name)?;
        limits::config_yaml(&req.config_yaml)?;
        limits::ids("component_ids", &req.component_ids)?;
        let run = self.registry.create_run(NewRun {
            run_id: Some(req.run_id),
            pipeline_name: req.pipeline_name,
            config_yaml: req.config_yaml,
            component_ids: req.component_ids,
            owner: None,
            from_ledger: req.from_ledger,
            to_ledger: req.to_ledger,
            // A remote client's run has no pipeline file of ours saying when it is stalled.
            stalled_after: None,
        })?;
        Ok(Response::new(shown(run)))
    }

    async fn update_pipeline_run(
        &self,
        request: Request<UpdatePipelineRunRequest>,
    ) -> Result<Response<PipelineRun>, Status> {
        self.access.manage_runs(&request, "UpdatePipelineRun")?;
        let req = request.into_inner();
        limits::id("run_id", &req.run_id)?;
        limits::text("error", &req.error, limits::MAX_TEXT_BYTES)?;
        if let Some(metrics) = &req.metrics {
            limits::metrics("metrics.component_metrics", &metrics.component_metrics)?;
        }
        let status = known_run_status(req.status, "status")?;
        let update = RunUpdate {
            status: (status != RunStatus::Unknown).then_some(status),
            metrics: req.metrics,
            error: (!req.error.is_empty()).then_some(req.error),
        };
        Ok(Response::new(shown(
            self.registry.update_run(&req.run_id, update)?,
        )))
    }

    async fn get_pipeline_run(
        &self,
        request: Request<GetPipelineRunRequest>,
    ) -> Result<Response<PipelineRun>, Status> {
        self.access.read(&request)?;
        Ok(Response::new(shown(
            self.registry.get_run(&request.into_inner().run_id)?,
        )))
    }

    async fn list_pipeline_runs(
        &self,
        request: Request<ListPipelineRunsRequest>,
    ) -> Result<Response<ListPipelineRunsResponse>, Status> {
        self.access.read(&request)?;
        let req = request.into_inner();
        limits::id("pipeline_name", &req.pipeline_name)?;
        let status = known_run_status(req.status, "status")?;
        if req.limit < 0 {
            return Err(Status::invalid_argument(format!(
                "limit: {} is negative",
                req.limit
            )));
        }
        let runs = self.registry.list_runs(RunFilter {
            pipeline_name: (!req.pipeline_name.is_empty()).then_some(req.pipeline_name),
            status: (status != RunStatus::Unknown).then_some(status),
            limit: req.limit as usize,
        })?;
        let (runs, truncated) = limits::fit_answer(runs.into_iter().map(shown).collect());
        Ok(Response::new(ListPipelineRunsResponse { runs, truncated }))
    }

    async fn stop_pipeline_run(
        &self,
        request: Request<StopPipelineRunRequest>,
    ) -> Result<Response<PipelineRun>, Status> {
        self.access.manage_runs(&request, "StopPipelineRun")?;
        Ok(Response::new(shown(
            self.registry.stop_run(&request.into_inner().run_id).await?,
        )))
    }

    async fn upsert_chunk_run(
        &self,
        request: Request<UpsertChunkRunRequest>,
    ) -> Result<Response<ChunkRun>, Status> {
        let mut component = request
            .get_ref()
            .chunk
            .as_ref()
            .map(|c| c.component_id.clone())
            .unwrap_or_default();
        self.access.report_chunk_for(&request, &mut component)?;
        let Some(mut chunk) = request.into_inner().chunk else {
            return Err(Status::invalid_argument("chunk: missing"));
        };
        chunk.component_id = component;
        for (field, value) in [
            ("chunk.chunk_id", &chunk.chunk_id),
            ("chunk.pipeline_run_id", &chunk.pipeline_run_id),
            ("chunk.component_id", &chunk.component_id),
            ("chunk.phase", &chunk.phase),
        ] {
            limits::id(field, value)?;
        }
        limits::text("chunk.error", &chunk.error, limits::MAX_TEXT_BYTES)?;
        limits::text(
            "chunk.recommended_action",
            &chunk.recommended_action,
            limits::MAX_TEXT_BYTES,
        )?;
        limits::metadata("chunk.verification", &chunk.verification)?;
        limits::metadata("chunk.metadata", &chunk.metadata)?;
        limits::metrics("chunk.row_counts", &chunk.row_counts)?;
        for key in chunk.row_counts.keys() {
            limits::id("chunk.row_counts key", key)?;
        }
        // The control plane says when it stored it.
        chunk.updated_at = None;
        let stored = self
            .registry
            .chunks()
            .upsert(chunk, std::time::SystemTime::now())
            .map_err(RegistryError::from)?;
        Ok(Response::new(stored))
    }

    async fn get_chunk_run(
        &self,
        request: Request<GetChunkRunRequest>,
    ) -> Result<Response<ChunkRun>, Status> {
        self.access.read(&request)?;
        let id = request.into_inner().chunk_id;
        limits::id("chunk_id", &id)?;
        match self
            .registry
            .chunks()
            .get(&id)
            .map_err(RegistryError::from)?
        {
            Some(chunk) => Ok(Response::new(chunk)),
            None => Err(Status::not_found(format!("no chunk run {id:?}"))),
        }
    }

    async fn list_chunk_runs(
        &self,
        request: Request<ListChunkRunsRequest>,
    ) -> Result<Response<ListChunkRunsResponse>, Status> {
        self.access.read(&request)?;
        let req = request.into_inner();
        limits::id("pipeline_run_id", &req.pipeline_run_id)?;
        limits::id("component_id", &req.component_id)?;
        limits::text("page_token", &req.page_token, limits::MAX_ID_BYTES * 2)?;
        let status = ChunkStatus::try_from(req.status).map_err(|_| {
            Status::invalid_argument(format!("status: {} is not a ChunkStatus", req.status))
        })?;
        if req.limit < 0 {
            return Err(Status::invalid_argument(format!(
                "limit: {} is negative",
                req.limit
            )));
        }
        let filter = ChunkFilter {
            pipeline_run_id: Some(req.pipeline_run_id).filter(|r| !r.is_empty()),
            component_id: Some(req.component_id).filter(|c| !c.is_empty()),
            status: (status != ChunkStatus::Unknown).then_some(status),
            limit: req.limit as usize,
            page_token: Some(req.page_token).filter(|t| !t.is_empty()),
        };
        let page = self
            .registry
            .chunks()
            .list(&filter)
            .map_err(RegistryError::from)?;
        let (chunks, cut) = limits::fit_answer(page.chunks);
        // A page cut to fit the message limit goes on after its last chunk.
        let next_page_token = match (cut, chunks.last()) {
            (true, Some(last)) => super::chunks::token_after(last),
            _ => page.next_page_token,
        };
        Ok(Response::new(ListChunkRunsResponse {
            chunks,
            next_page_token,
        }))
    }
}

/// `flowctl.v1.ControlPlaneService`.
#[derive(Debug, Clone)]
pub struct ControlPlaneV1 {
    registry: Registry,
    access: Access,
}

impl ControlPlaneV1 {
    pub fn new(registry: Registry, access: Access) -> Self {
        ControlPlaneV1 { registry, access }
    }
}

fn component_status(r: &ComponentRegistration) -> ComponentStatusResponse {
    ComponentStatusResponse {
        component: Some(r.info.clone()),
        status: r.health as i32,
        last_heartbeat: r.last_heartbeat.map(system_time_timestamp),
        metrics: r
            .metrics
            .iter()
            .map(|(k, v)| (k.clone(), v.to_text()))
            .collect(),
        registered_at: Some(system_time_timestamp(r.registered_at)),
    }
}

fn known_component_type(value: i32, field: &str) -> Result<ComponentType, Status> {
    ComponentType::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("{field}: {value} is not a ComponentType")))
}

#[tonic::async_trait]
impl ControlPlaneService for ControlPlaneV1 {
    async fn register_component(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let mut component_id = request.get_ref().component_id.clone();
        let owner = self.access.register(&request, &mut component_id)?;
        let mut req = request.into_inner();
        req.component_id = component_id;
        let info = req.component.unwrap_or_default();
        limits::id("component.id", &info.id)?;
        limits::id("component_id", &req.component_id)?;
        limits::id("component.name", &info.name)?;
        limits::id("component.version", &info.version)?;
        limits::text(
            "component.description",
            &info.description,
            limits::MAX_TEXT_BYTES,
        )?;
        limits::text("component.endpoint", &info.endpoint, limits::MAX_ID_BYTES)?;
        limits::ids("component.input_event_types", &info.input_event_types)?;
        limits::ids("component.output_event_types", &info.output_event_types)?;
        limits::metadata("component.metadata", &info.metadata)?;
        let component_type = known_component_type(info.r#type, "component.type")?;
        let topics = info.output_event_types.clone();
        let registration = Registration {
            service_id: info.id.clone(),
            component_id: req.component_id,
            api: Api::V1,
            service_type: service_type_of(component_type),
            info,
            max_inflight: 0,
        };
        let service_id = self.registry.register_owned(registration, owner)?;
        Ok(Response::new(RegisterResponse {
            service_id,
            assigned_topics: topics,
            connection_info: HashMap::from([(
                "heartbeat_interval".to_string(),
                humantime::format_duration(self.registry.config().heartbeat_interval).to_string(),
            )]),
        }))
    }

    async fn unregister_component(
        &self,
        request: Request<UnregisterRequest>,
    ) -> Result<Response<()>, Status> {
        self.access.act_for(
            &request,
            &request.get_ref().service_id,
            "UnregisterComponent",
        )?;
        let id = request.into_inner().service_id;
        if !self.registry.unregister(&id) {
            return Err(RegistryError::ServiceNotFound(id).into());
        }
        Ok(Response::new(()))
    }

    async fn discover_components(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        self.access.read(&request)?;
        let req = request.into_inner();
        let wanted_type = known_component_type(req.r#type, "type")?;
        let components = self
            .registry
            .list()
            .into_iter()
            .filter(|r| r.health != HealthStatus::Unhealthy)
            .filter(|r| {
                wanted_type == ComponentType::Unspecified || r.info.r#type == wanted_type as i32
            })
            .filter(|r| {
                req.event_types.is_empty()
                    || req.event_types.iter().any(|t| {
                        r.info.output_event_types.contains(t)
                            || r.info.input_event_types.contains(t)
                    })
            })
            .filter(|r| {
                req.metadata_filters
                    .iter()
                    .all(|(k, v)| r.info.metadata.get(k) == Some(v))
            })
            .map(|r| r.info)
            .collect();
        Ok(Response::new(DiscoveryResponse { components }))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<()>, Status> {
        self.access
            .act_for(&request, &request.get_ref().service_id, "Heartbeat")?;
        let hb = request.into_inner();
        limits::id("service_id", &hb.service_id)?;
        limits::metrics("metrics", &hb.metrics)?;
        for (key, value) in &hb.metrics {
            limits::text(&format!("metrics[{key}]"), value, limits::MAX_TEXT_BYTES)?;
        }
        let status = HealthStatus::try_from(hb.status).unwrap_or(HealthStatus::Unknown);
        let metrics = hb
            .metrics
            .into_iter()
            .map(|(k, v)| (k, MetricValue::Text(v)))
            .collect();
        self.registry.heartbeat(&hb.service_id, status, metrics)?;
        Ok(Response::new(()))
    }

    async fn get_component_status(
        &self,
        request: Request<ComponentStatusRequest>,
    ) -> Result<Response<ComponentStatusResponse>, Status> {
        self.access.read(&request)?;
        let id = request.into_inner().service_id;
        let status = self
            .registry
            .status(&id)
            .ok_or(RegistryError::ServiceNotFound(id))?;
        Ok(Response::new(component_status(&status)))
    }

    async fn list_components(
        &self,
        request: Request<ListComponentsRequest>,
    ) -> Result<Response<ListComponentsResponse>, Status> {
        self.access.read(&request)?;
        let req = request.into_inner();
        let wanted_type = known_component_type(req.type_filter, "type_filter")?;
        let components = self
            .registry
            .list()
            .iter()
            .filter(|r| req.include_unhealthy || r.health != HealthStatus::Unhealthy)
            .filter(|r| {
                wanted_type == ComponentType::Unspecified || r.info.r#type == wanted_type as i32
            })
            .map(component_status)
            .collect();
        Ok(Response::new(ListComponentsResponse { components }))
    }
}
