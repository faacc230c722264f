//! `grpc.health.v1`, with watch streams that end when the server shuts down.
//!
//! tonic-health's own service keeps `Watch` streams open until its reporter is dropped, which a
//! graceful shutdown waits for; this one ends them with the shutdown signal, after telling
//! watchers `NOT_SERVING`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Sets the health of the server (`""`) and of each service.
#[derive(Clone)]
pub struct HealthHandle {
    statuses: Arc<watch::Sender<BTreeMap<String, ServingStatus>>>,
}

impl HealthHandle {
    /// Marks `service` (`""` for the whole server) serving or not.
    pub fn set(&self, service: &str, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.statuses.send_modify(|m| {
            m.insert(service.to_string(), status);
        });
    }

    /// Marks the server and every service not serving.
    pub fn set_all_not_serving(&self) {
        self.statuses.send_modify(|m| {
            for s in m.values_mut() {
                *s = ServingStatus::NotServing;
            }
        });
    }

    /// The status of `service`, if known.
    pub fn get(&self, service: &str) -> Option<ServingStatus> {
        self.statuses.borrow().get(service).copied()
    }
}

struct HealthApi {
    statuses: watch::Receiver<BTreeMap<String, ServingStatus>>,
    shutdown: CancellationToken,
}

/// The health service and the handle that drives it.
pub fn service(shutdown: CancellationToken) -> (HealthHandle, HealthServer<impl Health>) {
    let mut initial = BTreeMap::new();
    initial.insert(String::new(), ServingStatus::Serving);
    let (tx, rx) = watch::channel(initial);
    let handle = HealthHandle { statuses: Arc::new(tx) };
    (handle, HealthServer::new(HealthApi { statuses: rx, shutdown }))
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.statuses.borrow().get(&service) {
            Some(s) => Ok(Response::new(response(*s))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let mut statuses = self.statuses.clone();
        let shutdown = self.shutdown.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let now = statuses
                    .borrow_and_update()
                    .get(&service)
                    .copied()
                    .unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(now) {
                    last = Some(now);
                    if tx.send(Ok(response(now))).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    r = statuses.changed() => if r.is_err() { return },
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Ok(response(ServingStatus::NotServing))).await;
                        return;
                    }
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
