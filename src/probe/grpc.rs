//! `grpc {port, service}`: grpc.health.v1 `Check` answers SERVING.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub async fn check(port: u16, service: &str, timeout: Duration) -> Result<(), String> {
    let address = format!("http://127.0.0.1:{port}");
    let channel = tonic::transport::Endpoint::from_shared(address.clone())
        .map_err(|e| format!("{address}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|e| format!("grpc.health.v1 Check on {address}: {}", e.message()))?;
    let status = response.into_inner().status;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        let name = ServingStatus::try_from(status)
            .map(|s| s.as_str_name())
            .unwrap_or("UNKNOWN");
        Err(format!("grpc.health.v1 Check on {address}: {name}"))
    }
}
