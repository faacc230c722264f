//! `keyregistry.v1.LookupService`: validity, key records, history and operators.

use registry_core::error::FieldError;
use registry_core::event::Identifier;
use registry_core::ids::{self, EvseId, OperatorId};
use registry_core::ocpi::{self, Input};
use registry_core::time::{self, Time};
use registry_core::validity::{self, Selector};
use registry_proto::pb::lookup_service_server::LookupService;
use registry_proto::pb::{self, key_selector};
use tonic::{Code, Request, Response, Status};

use super::status;
use crate::evidence::EvidenceBuilder;
use crate::lookup::{AsOf, Basis, Lookups};

/// Entries per history page when the request does not say.
const DEFAULT_PAGE: usize = 100;
/// Most entries per history page.
const MAX_PAGE: usize = 1000;

/// See the module documentation.
pub struct LookupApi {
    lookups: Lookups,
    evidence: EvidenceBuilder,
}

impl LookupApi {
    /// The service over the lookups, attaching evidence from `evidence` on request.
    pub fn new(lookups: Lookups, evidence: EvidenceBuilder) -> Self {
        Self { lookups, evidence }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Lookups, EvidenceBuilder) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let (lookups, evidence) = (self.lookups.clone(), self.evidence.clone());
        status::blocking(move || f(lookups, evidence)).await
    }
}

/// Evidence for the identifiers `roots` names, if asked for (only then are they built: a batch
/// has one per question); EVSE and serial answers also need their keys' chains.
fn evidence(
    builder: &EvidenceBuilder,
    prove: bool,
    roots: impl FnOnce() -> Vec<Identifier>,
) -> Result<Option<pb::AnswerProof>, Status> {
    if !prove {
        return Ok(None);
    }
    let roots = roots();
    let expand = roots.iter().any(|r| r.kind != registry_core::event::IdentifierKind::Key);
    Ok(Some(builder.answer(&roots, expand).map_err(Status::from)?.proof))
}

fn selector(key: Option<&pb::KeySelector>, field: &str) -> Result<Selector, Status> {
    let key = key.ok_or_else(|| status::invalid(field, "must be set"))?;
    let manufacturer =
        (!key.manufacturer.trim().is_empty()).then(|| key.manufacturer.trim().to_string());
    let serial = |s: &str, name: &str| {
        ids::serial(s).map_err(|e| status::invalid(&format!("{field}.{name}"), e.0))
    };
    match key.selector.as_ref() {
        Some(key_selector::Selector::Fingerprint(f)) => {
            registry_core::event::parse_fingerprint(f).map(Selector::Fingerprint).ok_or_else(|| {
                status::invalid(&format!("{field}.fingerprint"), "must be 64 hex digits")
            })
        }
        Some(key_selector::Selector::MeterSerial(s)) => {
            Ok(Selector::MeterSerial { serial: serial(s, "meter_serial")?, manufacturer })
        }
        Some(key_selector::Selector::GatewaySerial(s)) => {
            Ok(Selector::GatewaySerial { serial: serial(s, "gateway_serial")?, manufacturer })
        }
        Some(key_selector::Selector::EvseId(e)) => EvseId::parse(e)
            .map(Selector::Evse)
            .map_err(|e| status::invalid(&format!("{field}.evse_id"), e.0)),
        None => Err(status::invalid(
            field,
            "name a fingerprint, meter serial, gateway serial or EVSE ID",
        )),
    }
}

fn at(t: &Option<registry_proto::Timestamp>, field: &str) -> Result<Time, Status> {
    let t = t.as_ref().ok_or_else(|| status::invalid(field, "must be set"))?;
    time::from_timestamp(t).map_err(|e| status::invalid(field, e.to_string()))
}

fn as_of(a: &Option<pb::AsOf>) -> Result<AsOf, Status> {
    Ok(match a.as_ref().and_then(|a| a.point.as_ref()) {
        None => AsOf::Head,
        Some(pb::as_of::Point::LogSize(n)) => AsOf::Size(*n),
        Some(pb::as_of::Point::RecordedAt(t)) => AsOf::RecordedAt(
            time::from_timestamp(t)
                .map_err(|e| status::invalid("as_of.recorded_at", e.to_string()))?,
        ),
    })
}

/// The view an answer is sent in: a proven answer is always full, since a verifier re-derives
/// the full answer from the evidence and compares.
fn answer_view(asked: i32, prove: bool) -> validity::View {
    if prove { validity::View::Full } else { validity::View::from(asked) }
}

fn basis_pb(b: &Basis) -> pb::Basis {
    pb::Basis {
        log_size: b.size,
        head_hash: b.head_hash.to_vec(),
        recorded_at: b.recorded_at.as_ref().map(time::to_timestamp),
    }
}

#[tonic::async_trait]
impl LookupService for LookupApi {
    async fn check_validity(
        &self,
        request: Request<pb::CheckValidityRequest>,
    ) -> Result<Response<pb::CheckValidityResponse>, Status> {
        let r = request.into_inner();
        let (sel, t, as_of) =
            (selector(r.key.as_ref(), "key")?, at(&r.at, "at")?, as_of(&r.as_of)?);
        let (prove, view) = (r.prove, answer_view(r.view, r.prove));
        let answer = move |l: &Lookups, e: &EvidenceBuilder| {
            let basis = l.basis(as_of).map_err(Status::from)?;
            let v = l.validity(&sel, t, &basis, view).map_err(Status::from)?;
            let proof = evidence(e, prove, || vec![sel.identifier()])?;
            Ok(Response::new(pb::CheckValidityResponse {
                validity: Some(v.into_pb_view(view)),
                basis: Some(basis_pb(&basis)),
                proof,
            }))
        };
        // Unproven checks run right on the async worker: a few reads from sled's cache take
        // microseconds, less than the hand-off to the blocking pool and back (measured: that
        // hand-off cost a third of a single check's throughput).
        if prove {
            self.blocking(move |l, e| answer(&l, &e)).await
        } else {
            answer(&self.lookups, &self.evidence)
        }
    }

    async fn check_validity_batch(
        &self,
        request: Request<pb::CheckValidityBatchRequest>,
    ) -> Result<Response<pb::CheckValidityBatchResponse>, Status> {
        let r = request.into_inner();
        let questions = r
            .queries
            .iter()
            .enumerate()
            .map(|(i, q)| match (selector(q.key.as_ref(), "key"), at(&q.at, "at")) {
                (Ok(s), Ok(t)) => Ok((s, t)),
                // Only a refusal needs the field's full path; building it for every question
                // cost more than answering some of them.
                _ => Ok((
                    selector(q.key.as_ref(), &format!("queries[{i}].key"))?,
                    at(&q.at, &format!("queries[{i}].at"))?,
                )),
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let (as_of, prove, view) = (as_of(&r.as_of)?, r.prove, answer_view(r.view, r.prove));
        self.blocking(move |l, e| {
            let basis = l.basis(as_of).map_err(Status::from)?;
            let results = l.validity_batch(&questions, &basis, view).map_err(Status::from)?;
            let proof =
                evidence(&e, prove, || questions.iter().map(|(s, _)| s.identifier()).collect())?;
            Ok(Response::new(pb::CheckValidityBatchResponse {
                results: results.into_iter().map(|v| v.into_pb_view(view)).collect(),
                basis: Some(basis_pb(&basis)),
                proof,
            }))
        })
        .await
    }

    async fn get_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::GetKeyResponse>, Status> {
        let r = request.into_inner();
        let fp = registry_core::event::parse_fingerprint(&r.fingerprint)
            .ok_or_else(|| status::invalid("fingerprint", "must be 64 hex digits"))?;
        let (as_of, prove) = (as_of(&r.as_of)?, r.prove);
        self.blocking(move |l, e| {
            let basis = l.basis(as_of).map_err(Status::from)?;
            let record = l.key(&fp, &basis).map_err(Status::from)?;
            let proof = evidence(&e, prove, || vec![Identifier::key(&fp)])?;
            Ok(Response::new(pb::GetKeyResponse {
                key: record.as_of(basis.size).map(|k| pb::KeyRecord::from(&k)),
                basis: Some(basis_pb(&basis)),
                proof,
            }))
        })
        .await
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let r = request.into_inner();
        let id =
            r.identifier.as_ref().ok_or_else(|| status::invalid("identifier", "must be set"))?;
        let identifier =
            Identifier::try_from(id).map_err(|e| status::bad_field(Code::InvalidArgument, &e))?;
        let page_size = match r.page_size as usize {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(status::invalid("page_size", format!("must be at most {MAX_PAGE}")));
            }
            n => n,
        };
        // A continuation token pins the first page's basis: "<basis size>:<next position>".
        let (as_of, start) = match r.page_token.as_str() {
            "" => (as_of(&r.as_of)?, None),
            token => {
                let (size, next) = token
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                    .ok_or_else(|| {
                        status::invalid("page_token", "is not a token this server issued")
                    })?;
                (AsOf::Size(size), Some(next))
            }
        };
        let prove = r.prove;
        self.blocking(move |l, e| {
            let basis = l.basis(as_of).map_err(Status::from)?;
            let page = l.history(&identifier, &basis, start, page_size).map_err(Status::from)?;
            let proof = evidence(&e, prove, || vec![identifier.clone()])?;
            let entries = page
                .entries
                .into_iter()
                .map(|(position, bytes, e)| pb::HistoryEntry {
                    position,
                    recorded_at: Some(time::to_timestamp(&e.header.recorded_at)),
                    events: e.body.events.iter().map(pb::Event::from).collect(),
                    signer_key_id: e
                        .body
                        .command
                        .map(|c| hex::encode(c.signer_key_id))
                        .unwrap_or_default(),
                    entry: bytes,
                })
                .collect();
            Ok(Response::new(pb::GetHistoryResponse {
                entries,
                next_page_token: page
                    .next
                    .map(|n| format!("{}:{n}", basis.size))
                    .unwrap_or_default(),
                basis: Some(basis_pb(&basis)),
                proof,
            }))
        })
        .await
    }

    async fn get_operator(
        &self,
        request: Request<pb::GetOperatorRequest>,
    ) -> Result<Response<pb::GetOperatorResponse>, Status> {
        let id = OperatorId::parse(&request.into_inner().operator_id)
            .map_err(|e| status::invalid("operator_id", e.0))?;
        self.blocking(move |l, _| {
            let basis = l.basis(AsOf::Head).map_err(Status::from)?;
            let (op, signers) = l.operator(&id).map_err(Status::from)?;
            if op.added_position >= basis.size {
                return Err(Status::from(crate::lookup::LookupError::NotFound(FieldError::new(
                    "operator_id",
                    format!("no operator {id}"),
                ))));
            }
            let keys = signers
                .into_iter()
                .filter(|s| s.added_position < basis.size)
                .map(|s| pb::OperatorKey {
                    key_id: hex::encode(s.key_id),
                    public_key: s.public_key,
                    added_position: s.added_position,
                    revoked_position: s.revoked_position.filter(|p| *p < basis.size).unwrap_or(0),
                })
                .collect();
            Ok(Response::new(pb::GetOperatorResponse {
                operator_id: op.operator_id.to_string(),
                name: op.name,
                keys,
                added_position: op.added_position,
                basis: Some(basis_pb(&basis)),
            }))
        })
        .await
    }

    async fn validate_signed_meter_values(
        &self,
        request: Request<pb::ValidateSignedMeterValuesRequest>,
    ) -> Result<Response<pb::ValidateSignedMeterValuesResponse>, Status> {
        let r = request.into_inner();
        let mut inputs: Vec<Input> = r
            .values
            .into_iter()
            .enumerate()
            .map(|(i, v)| Input {
                record: v.record,
                claimed_key: (!v.claimed_public_key.trim().is_empty())
                    .then_some(v.claimed_public_key),
                label: if v.label.is_empty() { format!("values[{i}]") } else { v.label },
            })
            .collect();
        if !r.ocpi_signed_data.trim().is_empty() {
            let ocpi = ocpi::signed_data(&r.ocpi_signed_data).map_err(|e| {
                status::bad_field(Code::InvalidArgument, &e.within("ocpi_signed_data"))
            })?;
            inputs.extend(ocpi);
        }
        if inputs.is_empty() {
            return Err(status::invalid("values", "give at least one record"));
        }
        let (as_of, prove) = (as_of(&r.as_of)?, r.prove);
        self.blocking(move |l, e| {
            let basis = l.basis(as_of).map_err(Status::from)?;
            let results = l.meter_values(&inputs, &basis).map_err(Status::from)?;
            let proof = if prove {
                let mut roots: Vec<Identifier> =
                    results.iter().flat_map(|v| v.identifiers()).collect();
                roots.sort();
                roots.dedup();
                match roots.is_empty() {
                    true => None,
                    false => Some(e.answer(&roots, true).map_err(Status::from)?.proof),
                }
            } else {
                None
            };
            Ok(Response::new(pb::ValidateSignedMeterValuesResponse {
                results: results
                    .iter()
                    .zip(&inputs)
                    .map(|(v, i)| v.to_pb(&i.label, &i.record, basis.size))
                    .collect(),
                basis: Some(basis_pb(&basis)),
                proof,
            }))
        })
        .await
    }
}
