//! Who may call what on the registry.
//!
//! | caller | reads | a component's own register / heartbeat / unregister / dead letter / chunk run | runs: create, update, stop; dead letters: resolve, purge |
//! |---|---|---|---|
//! | the unix socket (0660) or the operator token | yes | any component | yes |
//! | a process the supervisor started (found by [`super::peer`]) | yes | only its own | no |
//! | anyone else on loopback TCP | [`Anonymous`] decides | [`Anonymous`] decides | no |
//!
//! The Go components send no token; they are let in as processes the supervisor started.

use tonic::{Extensions, Request, Status};

use super::connections::TcpPeer;
use super::state::{Registry, SupervisedComponent};

/// What a TCP caller with neither the operator token nor a supervised process may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anonymous {
    /// Nothing: the token is required (a registry reachable off loopback).
    Nothing,
    /// Read: list and look up components and runs (secrets masked).
    Read,
    /// Read and register components: a registry that supervises nothing (`flowctl server`).
    ReadAndRegister,
}

/// Marks a request that carried the operator token.
#[derive(Debug, Clone, Copy)]
pub struct OperatorToken;

/// Who is calling, as far as permissions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Component(SupervisedComponent),
    Anonymous,
}

/// The permission checks the gRPC services make before acting.
#[derive(Debug, Clone)]
pub struct Access {
    registry: Registry,
    anonymous: Anonymous,
}

fn missing_token() -> Status {
    Status::unauthenticated("missing bearer token: set FLOWCTL_TOKEN")
}

fn operators_only(rpc: &str) -> Status {
    Status::permission_denied(format!(
        "{rpc} is for operators: call it over the registry's unix socket \
         (registry.sock in the runtime dir, mode 0660) or send the operator token \
         (FLOWCTL_TOKEN)"
    ))
}

impl Access {
    pub fn new(registry: Registry, anonymous: Anonymous) -> Self {
        Access {
            registry,
            anonymous,
        }
    }

    /// The caller of a request. Without a [`TcpPeer`] the request came over the unix socket
    /// (or from this process), which only the operator can reach.
    fn caller(&self, extensions: &Extensions) -> Caller {
        if extensions.get::<OperatorToken>().is_some() {
            return Caller::Operator;
        }
        let peer = extensions.get::<TcpPeer>().or_else(|| {
            extensions
                .get::<tonic::transport::server::TlsConnectInfo<TcpPeer>>()
                .map(|tls| tls.get_ref())
        });
        match peer {
            None => Caller::Operator,
            Some(peer) => match peer.component(&self.registry) {
                Some(component) => Caller::Component(component),
                None => Caller::Anonymous,
            },
        }
    }

    /// Lookups and lists.
    pub fn read<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.anonymous != Anonymous::Nothing {
            return Ok(());
        }
        match self.caller(request.extensions()) {
            Caller::Anonymous => Err(missing_token()),
            _ => Ok(()),
        }
    }

    /// Creating, updating and stopping pipeline runs.
    pub fn manage_runs<T>(&self, request: &Request<T>, rpc: &str) -> Result<(), Status> {
        match self.caller(request.extensions()) {
            Caller::Operator => Ok(()),
            Caller::Anonymous if self.anonymous == Anonymous::Nothing => Err(missing_token()),
            _ => Err(operators_only(rpc)),
        }
    }

    /// A registration: returns the owner to record. A supervised process registers as its own
    /// component (an empty component id is filled in) and as no other.
    pub fn register<T>(
        &self,
        request: &Request<T>,
        component_id: &mut String,
    ) -> Result<Option<SupervisedComponent>, Status> {
        match self.caller(request.extensions()) {
            Caller::Operator => Ok(None),
            Caller::Component(own) => {
                if component_id.is_empty() {
                    *component_id = own.component.clone();
                } else if *component_id != own.component {
                    return Err(Status::permission_denied(format!(
                        "this process belongs to component {own}, so it cannot register \
                         component id {component_id:?}"
                    )));
                }
                Ok(Some(own))
            }
            Caller::Anonymous => match self.anonymous {
                Anonymous::ReadAndRegister => Ok(None),
                Anonymous::Nothing => Err(missing_token()),
                Anonymous::Read => Err(not_supervised("Register")),
            },
        }
    }

    /// A dead letter for `pipeline`/`component`. A supervised process reports for its own
    /// component only (empty fields are filled in with it); the operator for any; anonymous
    /// callers where they may register.
    pub fn report_for<T>(
        &self,
        request: &Request<T>,
        pipeline: &mut String,
        component: &mut String,
    ) -> Result<(), Status> {
        match self.caller(request.extensions()) {
            Caller::Operator => Ok(()),
            Caller::Component(own) => {
                for (field, value, owned) in [
                    ("pipeline", &mut *pipeline, &own.pipeline),
                    ("component", &mut *component, &own.component),
                ] {
                    if value.is_empty() {
                        value.clone_from(owned);
                    } else if *value != *owned {
                        return Err(Status::permission_denied(format!(
                            "this process belongs to component {own}, so it cannot report a \
                             dead letter for {field} {value:?}"
                        )));
                    }
                }
                Ok(())
            }
            Caller::Anonymous => match self.anonymous {
                Anonymous::ReadAndRegister => Ok(()),
                Anonymous::Nothing => Err(missing_token()),
                Anonymous::Read => Err(not_supervised("Report")),
            },
        }
    }

    /// A chunk run report for `component`: a supervised process reports its own component's
    /// chunks only (an empty one is filled in with it); the operator any; anonymous callers
    /// where they may register.
    pub fn report_chunk_for<T>(
        &self,
        request: &Request<T>,
        component: &mut String,
    ) -> Result<(), Status> {
        match self.caller(request.extensions()) {
            Caller::Operator => Ok(()),
            Caller::Component(own) => {
                if component.is_empty() {
                    component.clone_from(&own.component);
                } else if *component != own.component {
                    return Err(Status::permission_denied(format!(
                        "this process belongs to component {own}, so it cannot report a chunk \
                         run of component {component:?}"
                    )));
                }
                Ok(())
            }
            Caller::Anonymous => match self.anonymous {
                Anonymous::ReadAndRegister => Ok(()),
                Anonymous::Nothing => Err(missing_token()),
                Anonymous::Read => Err(not_supervised("UpsertChunkRun")),
            },
        }
    }

    /// A heartbeat or unregistration for `service_id`: only by whoever registered it. An
    /// unknown id passes, so the registry can answer NOT_FOUND and the component register
    /// again.
    pub fn act_for<T>(
        &self,
        request: &Request<T>,
        service_id: &str,
        rpc: &str,
    ) -> Result<(), Status> {
        let caller = self.caller(request.extensions());
        let owner = self.registry.owner_of(service_id);
        match caller {
            Caller::Operator => Ok(()),
            Caller::Component(own) => match owner {
                None => Ok(()),
                Some(Some(owner)) if owner == own => Ok(()),
                Some(_) => Err(Status::permission_denied(format!(
                    "service {service_id:?} was not registered by this process's component \
                     {own}, so it cannot {rpc} it"
                ))),
            },
            Caller::Anonymous => match self.anonymous {
                Anonymous::ReadAndRegister if !matches!(owner, Some(Some(_))) => Ok(()),
                Anonymous::Nothing => Err(missing_token()),
                _ => Err(not_supervised(rpc)),
            },
        }
    }
}

fn not_supervised(rpc: &str) -> Status {
    Status::permission_denied(format!(
        "{rpc} is for the components this supervisor started, and this connection comes from \
         none of them: use the registry's unix socket or the operator token (FLOWCTL_TOKEN)"
    ))
}
