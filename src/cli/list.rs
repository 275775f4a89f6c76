//! `flowctl list`: the components registered with a registry, their health and last heartbeat.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use serde_json::json;

use crate::registry::client::{connect, default_endpoint, ClientOptions, RegistryClient};
use crate::registry::health::status_name;
use crate::registry::HealthStatus;

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

/// How to reach the registry and how to print; shared by the registry subcommands.
#[derive(Debug, Clone, ClapArgs)]
pub struct Conn {
    /// Registry address: host:port, http(s)://host:port or unix:/path. Default
    /// $FLOWCTL_ENDPOINT, else the local registry socket, else 127.0.0.1:8080.
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        global = true
    )]
    pub output: Output,
}

impl Conn {
    pub async fn connect(&self) -> anyhow::Result<RegistryClient> {
        let endpoint = self.endpoint.clone().unwrap_or_else(default_endpoint);
        Ok(connect(&ClientOptions::from_env(endpoint)).await?)
    }
}

/// Runs a client command on a small runtime.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<i32>>>(f: F) -> anyhow::Result<i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// A gRPC error as the operator should read it.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable => {
            anyhow::anyhow!("the registry is unavailable: {}", status.message())
        }
        tonic::Code::Unauthenticated => {
            anyhow::anyhow!(
                "{} (the registry wants a bearer token in FLOWCTL_TOKEN)",
                status.message()
            )
        }
        _ => anyhow::anyhow!("{}", status.message()),
    }
}

/// Prints rows under a header, columns padded to their widest cell, control characters
/// escaped (cells come from any registry client).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| super::text::escape(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    super::text::pad(c, widths[i])
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn timestamp_time(ts: &prost_types::Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(ts.seconds.max(0) as u64, ts.nanos.max(0) as u32)
}

pub fn rfc3339(ts: &prost_types::Timestamp) -> String {
    humantime::format_rfc3339_seconds(timestamp_time(ts)).to_string()
}

/// "3s ago", "2m ago", "1h ago".
pub fn ago(ts: &prost_types::Timestamp) -> String {
    let age = SystemTime::now()
        .duration_since(timestamp_time(ts))
        .unwrap_or_default();
    format!("{} ago", short_duration(age))
}

pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    conn: Conn,
}

impl Args {
    pub fn run(self) -> anyhow::Result<i32> {
        block_on(async move { list_services(&self.conn).await })
    }
}

pub async fn list_services(conn: &Conn) -> anyhow::Result<i32> {
    let mut client = conn.connect().await?;
    let components = client
        .v1
        .list_components(flowctl_proto::flowctl::v1::ListComponentsRequest {
            type_filter: 0,
            include_unhealthy: true,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .components;
    // The component id (the supervisor's name for the process) and the service type as
    // registered are only on the v0 view.
    let v0: HashMap<String, (String, i32)> = client
        .v0
        .list_services(())
        .await
        .map_err(status_error)?
        .into_inner()
        .services
        .into_iter()
        .map(|s| (s.service_id, (s.component_id, s.service_type)))
        .collect();
    let component_ids: HashMap<String, String> = v0
        .iter()
        .map(|(id, (component, _))| (id.clone(), component.clone()))
        .collect();
    let type_name = |id: &str, t: i32| {
        use flowctl_proto::flowctl::v1::ComponentType;
        use flowctl_proto::flowctl::ServiceType;
        match v0.get(id).map(|(_, t)| ServiceType::try_from(*t)) {
            Some(Ok(service_type)) if service_type != ServiceType::Unspecified => {
                crate::registry::service_type_name(service_type)
            }
            _ => match ComponentType::try_from(t) {
                Ok(ComponentType::Source) => "source",
                Ok(ComponentType::Processor) => "processor",
                Ok(ComponentType::Consumer) => "sink",
                _ => "-",
            },
        }
    };
    let health = |s: i32| status_name(HealthStatus::try_from(s).unwrap_or(HealthStatus::Unknown));
    match conn.output {
        Output::Json => {
            let items: Vec<_> = components
                .iter()
                .map(|c| {
                    let info = c.component.clone().unwrap_or_default();
                    let metrics: BTreeMap<_, _> = c.metrics.iter().collect();
                    let metadata: BTreeMap<_, _> = info.metadata.iter().collect();
                    json!({
                        "service_id": info.id,
                        "component_id": component_ids.get(&info.id).cloned().unwrap_or_default(),
                        "type": type_name(&info.id, info.r#type),
                        "health": health(c.status),
                        "registered_at": c.registered_at.as_ref().map(rfc3339),
                        "last_heartbeat": c.last_heartbeat.as_ref().map(rfc3339),
                        "endpoint": info.endpoint,
                        "input_event_types": info.input_event_types,
                        "output_event_types": info.output_event_types,
                        "metadata": metadata,
                        "metrics": metrics,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        Output::Table => {
            if components.is_empty() {
                println!("no components registered");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = components
                .iter()
                .map(|c| {
                    let info = c.component.clone().unwrap_or_default();
                    let metrics: BTreeMap<_, _> = c.metrics.iter().collect();
                    vec![
                        info.id.clone(),
                        type_name(&info.id, info.r#type).to_string(),
                        health(c.status).to_string(),
                        c.last_heartbeat
                            .as_ref()
                            .map(ago)
                            .unwrap_or_else(|| "never".into()),
                        c.registered_at.as_ref().map(ago).unwrap_or_default(),
                        metrics
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ]
                })
                .collect();
            print_table(
                &[
                    "SERVICE",
                    "TYPE",
                    "HEALTH",
                    "LAST HEARTBEAT",
                    "REGISTERED",
                    "METRICS",
                ],
                &rows,
            );
        }
    }
    Ok(0)
}
