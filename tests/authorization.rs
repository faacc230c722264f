//! The authorization matrix: every command × {owning operator, foreign operator, administrator,
//! unknown key, revoked key, stale issue time, tampered bytes, signature from another key}.
//! Each case gets a fresh target, expects exactly one outcome, and on denial checks that the log
//! did not grow.

use registry_client::{EndReason, KeySubmission, Order};
use registry_core::command::SignedCommand;
use registry_core::keys::P256KeyPair;
use registry_server::commands::ConfirmPolicy;
use registry_tests::{Fixture, meter_key, spki_hex, t};
use std::sync::atomic::{AtomicU32, Ordering};
use tonic::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Owner,
    Foreign,
    Admin,
    Unknown,
    Revoked,
    Stale,
    Tampered,
    OtherKeySignature,
}

const EVERYONE: [Who; 8] = [
    Who::Owner,
    Who::Foreign,
    Who::Admin,
    Who::Unknown,
    Who::Revoked,
    Who::Stale,
    Who::Tampered,
    Who::OtherKeySignature,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    AddAdminKey,
    RevokeAdminKey,
    AddOperator,
    AddOperatorKey,
    RevokeOperatorKey,
    ConfirmKey,
    RejectKey,
    ForceTakeOver,
    RegisterKey,
    DeactivateKey,
    RelocateKey,
    ReplaceKey,
    RotateKey,
    ReleaseKey,
    TakeOverKey,
}

const ALL: [Cmd; 15] = [
    Cmd::AddAdminKey,
    Cmd::RevokeAdminKey,
    Cmd::AddOperator,
    Cmd::AddOperatorKey,
    Cmd::RevokeOperatorKey,
    Cmd::ConfirmKey,
    Cmd::RejectKey,
    Cmd::ForceTakeOver,
    Cmd::RegisterKey,
    Cmd::DeactivateKey,
    Cmd::RelocateKey,
    Cmd::ReplaceKey,
    Cmd::RotateKey,
    Cmd::ReleaseKey,
    Cmd::TakeOverKey,
];

impl Cmd {
    fn is_admin(self) -> bool {
        matches!(
            self,
            Cmd::AddAdminKey
                | Cmd::RevokeAdminKey
                | Cmd::AddOperator
                | Cmd::AddOperatorKey
                | Cmd::RevokeOperatorKey
                | Cmd::ConfirmKey
                | Cmd::RejectKey
                | Cmd::ForceTakeOver
        )
    }
}

/// Operators A (owns the keys), B (receives takeovers) and C (foreign to everything), plus a
/// revoked key of A and a revoked administrator key.
struct World {
    f: Fixture,
    a: P256KeyPair,
    b: P256KeyPair,
    c: P256KeyPair,
    revoked_operator_key: P256KeyPair,
    revoked_admin_key: P256KeyPair,
    counter: AtomicU32,
}

impl World {
    async fn new() -> Self {
        // Manual confirmation, so that confirm and reject have pending keys to act on.
        let f = Fixture::start_with(ConfirmPolicy::Manual).await;
        let (a, b, c) =
            (f.operator("DE*AAA").await, f.operator("DE*BBB").await, f.operator("DE*CCC").await);
        let revoked_operator_key = P256KeyPair::generate();
        f.client
            .submit(
                &f.admin,
                &Order::AddOperatorKey {
                    operator_id: "DE*AAA".into(),
                    public_key: revoked_operator_key.public_key_pem(),
                },
            )
            .await
            .unwrap();
        f.client
            .submit(
                &f.admin,
                &Order::RevokeOperatorKey {
                    operator_id: "DE*AAA".into(),
                    key_id: revoked_operator_key.fingerprint_hex(),
                },
            )
            .await
            .unwrap();
        let revoked_admin_key = P256KeyPair::generate();
        f.client
            .submit(
                &f.admin,
                &Order::AddAdminKey {
                    public_key: revoked_admin_key.public_key_pem(),
                    label: "temporary".into(),
                },
            )
            .await
            .unwrap();
        f.client
            .submit(
                &f.admin,
                &Order::RevokeAdminKey { key_id: revoked_admin_key.fingerprint_hex() },
            )
            .await
            .unwrap();
        Self { f, a, b, c, revoked_operator_key, revoked_admin_key, counter: AtomicU32::new(0) }
    }

    fn next(&self) -> u32 {
        self.counter.fetch_add(1, Ordering::SeqCst)
    }

    /// A fresh key of operator A on its own EVSE.
    async fn registered_key(&self) -> (P256KeyPair, String) {
        let meter = meter_key();
        let evse = format!("DE*AAA*E{}", self.next());
        self.f
            .client
            .submit(
                &self.a,
                &Order::Register {
                    key: KeySubmission {
                        meter_serial: Some(format!("S{}", self.next())),
                        ..KeySubmission::new(spki_hex(&meter))
                    },
                    evse_ids: vec![evse.clone()],
                    effective_at: Some(t("2026-01-01T00:00:00Z")),
                },
            )
            .await
            .unwrap();
        (meter, evse)
    }

    /// Builds a fresh target for `cmd`; returns the action and the key that may order it.
    async fn prepare(&self, cmd: Cmd) -> (Order, P256KeyPair) {
        let admin = || self.f.admin.clone();
        let at = Some(t("2026-02-01T00:00:00Z"));
        match cmd {
            Cmd::AddAdminKey => (
                Order::AddAdminKey {
                    public_key: P256KeyPair::generate().public_key_pem(),
                    label: "new".into(),
                },
                admin(),
            ),
            Cmd::RevokeAdminKey => {
                let k = P256KeyPair::generate();
                self.f
                    .client
                    .submit(
                        &self.f.admin,
                        &Order::AddAdminKey { public_key: k.public_key_pem(), label: "x".into() },
                    )
                    .await
                    .unwrap();
                (Order::RevokeAdminKey { key_id: k.fingerprint_hex() }, admin())
            }
            Cmd::AddOperator => (
                Order::AddOperator {
                    operator_id: format!("DE*N{:02}", self.next()),
                    name: "New".into(),
                    public_keys: vec![P256KeyPair::generate().public_key_pem()],
                },
                admin(),
            ),
            Cmd::AddOperatorKey => (
                Order::AddOperatorKey {
                    operator_id: "DE*AAA".into(),
                    public_key: P256KeyPair::generate().public_key_pem(),
                },
                admin(),
            ),
            Cmd::RevokeOperatorKey => {
                let k = P256KeyPair::generate();
                self.f
                    .client
                    .submit(
                        &self.f.admin,
                        &Order::AddOperatorKey {
                            operator_id: "DE*AAA".into(),
                            public_key: k.public_key_pem(),
                        },
                    )
                    .await
                    .unwrap();
                (
                    Order::RevokeOperatorKey {
                        operator_id: "DE*AAA".into(),
                        key_id: k.fingerprint_hex(),
                    },
                    admin(),
                )
            }
            Cmd::ConfirmKey => {
                let (m, _) = self.registered_key().await;
                (Order::Confirm { fingerprint: m.fingerprint_hex() }, admin())
            }
            Cmd::RejectKey => {
                let (m, _) = self.registered_key().await;
                (Order::Reject { fingerprint: m.fingerprint_hex(), reason: "no".into() }, admin())
            }
            Cmd::ForceTakeOver => {
                let (m, _) = self.registered_key().await;
                let evse = format!("DE*BBB*E{}", self.next());
                (
                    Order::ForceTakeOver {
                        fingerprint: m.fingerprint_hex(),
                        operator_id: "DE*BBB".into(),
                        evse_ids: vec![evse],
                        effective_at: at,
                    },
                    admin(),
                )
            }
            Cmd::RegisterKey => (
                Order::Register {
                    key: KeySubmission::new(spki_hex(&meter_key())),
                    evse_ids: vec![format!("DE*AAA*E{}", self.next())],
                    effective_at: Some(t("2026-01-01T00:00:00Z")),
                },
                self.a.clone(),
            ),
            Cmd::DeactivateKey => {
                let (m, _) = self.registered_key().await;
                (
                    Order::Deactivate {
                        fingerprint: m.fingerprint_hex(),
                        reason: EndReason::Decommissioned,
                        comment: String::new(),
                        effective_at: at,
                    },
                    self.a.clone(),
                )
            }
            Cmd::RelocateKey => {
                let (m, _) = self.registered_key().await;
                (
                    Order::Relocate {
                        fingerprint: m.fingerprint_hex(),
                        evse_ids: vec![format!("DE*AAA*E{}", self.next())],
                        effective_at: at,
                    },
                    self.a.clone(),
                )
            }
            Cmd::ReplaceKey => {
                let (m, _) = self.registered_key().await;
                (
                    Order::Replace {
                        fingerprint: m.fingerprint_hex(),
                        new_key: KeySubmission::new(spki_hex(&meter_key())),
                        effective_at: at,
                        comment: String::new(),
                    },
                    self.a.clone(),
                )
            }
            Cmd::RotateKey => {
                let (m, _) = self.registered_key().await;
                (
                    Order::Rotate {
                        fingerprint: m.fingerprint_hex(),
                        new_key: KeySubmission::new(spki_hex(&meter_key())),
                        effective_at: at,
                    },
                    self.a.clone(),
                )
            }
            Cmd::ReleaseKey => {
                let (m, _) = self.registered_key().await;
                (
                    Order::Release {
                        fingerprint: m.fingerprint_hex(),
                        to_operator_id: "DE*BBB".into(),
                    },
                    self.a.clone(),
                )
            }
            Cmd::TakeOverKey => {
                let (m, _) = self.registered_key().await;
                self.f
                    .client
                    .submit(
                        &self.a,
                        &Order::Release {
                            fingerprint: m.fingerprint_hex(),
                            to_operator_id: "DE*BBB".into(),
                        },
                    )
                    .await
                    .unwrap();
                (
                    Order::TakeOver {
                        fingerprint: m.fingerprint_hex(),
                        evse_ids: vec![format!("DE*BBB*E{}", self.next())],
                        effective_at: at,
                    },
                    self.b.clone(),
                )
            }
        }
    }

    /// Signs `action` as `who` and submits it.
    async fn submit(
        &self,
        cmd: Cmd,
        who: Who,
        action: &Order,
        owner: &P256KeyPair,
    ) -> Result<(), tonic::Code> {
        let now = chrono::Utc::now();
        let signed = match who {
            Who::Owner => {
                SignedCommand::sign(registry_client::command_bytes(action), &self.f.origin(), owner)
            }
            Who::Foreign => SignedCommand::sign(
                registry_client::command_bytes(action),
                &self.f.origin(),
                &self.c,
            ),
            Who::Admin => SignedCommand::sign(
                registry_client::command_bytes(action),
                &self.f.origin(),
                &self.f.admin,
            ),
            Who::Unknown => SignedCommand::sign(
                registry_client::command_bytes(action),
                &self.f.origin(),
                &P256KeyPair::generate(),
            ),
            Who::Revoked => {
                let key = if cmd.is_admin() {
                    &self.revoked_admin_key
                } else {
                    &self.revoked_operator_key
                };
                SignedCommand::sign(registry_client::command_bytes(action), &self.f.origin(), key)
            }
            Who::Stale => {
                let bytes = registry_client::command_bytes_with(
                    action,
                    uuid::Uuid::now_v7(),
                    now - chrono::TimeDelta::minutes(10),
                );
                SignedCommand::sign(bytes, &self.f.origin(), owner)
            }
            Who::Tampered => {
                let mut s = SignedCommand::sign(
                    registry_client::command_bytes(action),
                    &self.f.origin(),
                    owner,
                );
                let last = s.command.len() - 1;
                s.command[last] ^= 0x01;
                s
            }
            Who::OtherKeySignature => {
                let forged = SignedCommand::sign(
                    registry_client::command_bytes(action),
                    &self.f.origin(),
                    &P256KeyPair::generate(),
                );
                SignedCommand { signer_key_id: owner.fingerprint(), ..forged }
            }
        };
        self.f
            .client
            .submit_signed(signed)
            .await
            .map(|_| ())
            .map_err(|e| e.code().expect("a status from the server"))
    }
}

fn expected(cmd: Cmd, who: Who) -> Result<(), Code> {
    match who {
        Who::Owner => Ok(()),
        Who::Admin if cmd.is_admin() => Ok(()),
        Who::Admin | Who::Foreign => Err(Code::PermissionDenied),
        Who::Unknown | Who::Revoked | Who::Stale | Who::Tampered | Who::OtherKeySignature => {
            Err(Code::Unauthenticated)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_is_allowed_only_for_its_rightful_signer() {
    let w = World::new().await;
    let mut failures = Vec::new();
    for cmd in ALL {
        for who in EVERYONE {
            let (action, owner) = w.prepare(cmd).await;
            let before = w.f.log_size();
            let got = w.submit(cmd, who, &action, &owner).await;
            let after = w.f.log_size();
            let want = expected(cmd, who);
            if got != want {
                failures.push(format!("{cmd:?} by {who:?}: expected {want:?}, got {got:?}"));
            }
            if got.is_err() && after != before {
                failures.push(format!(
                    "{cmd:?} by {who:?}: denied, yet the log grew from {before} to {after}"
                ));
            }
            if got.is_ok() && after <= before {
                failures.push(format!("{cmd:?} by {who:?}: allowed, yet nothing was appended"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of 120 cases wrong:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_its_signer_was_revoked_still_returns_the_original_result() {
    let f = Fixture::start().await;
    f.operator("DE*RTY").await;
    let second = P256KeyPair::generate();
    let add =
        Order::AddOperatorKey { operator_id: "DE*RTY".into(), public_key: second.public_key_pem() };
    f.client.submit(&f.admin, &add).await.unwrap();
    let register = |evse: &str| Order::Register {
        key: KeySubmission {
            meter_serial: Some(format!("S-{evse}")),
            ..KeySubmission::new(spki_hex(&meter_key()))
        },
        evse_ids: vec![evse.into()],
        effective_at: Some(t("2026-01-01T00:00:00Z")),
    };
    let signed = SignedCommand::sign(
        registry_client::command_bytes(&register("DE*RTY*E1")),
        &f.origin(),
        &second,
    );
    let first = f.client.submit_signed(signed.clone()).await.unwrap();
    assert!(!first.duplicate);
    let revoke =
        Order::RevokeOperatorKey { operator_id: "DE*RTY".into(), key_id: second.fingerprint_hex() };
    f.client.submit(&f.admin, &revoke).await.unwrap();

    let size = f.log_size();
    let again = f.client.submit_signed(signed.clone()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.position, &again.entry), (first.position, &first.entry));
    assert_eq!(again.confirmation_position, first.confirmation_position);
    assert_eq!(f.log_size(), size, "a retry appends nothing");

    // Only that very envelope: the same bytes with another signature, or a new command from
    // the revoked key, are refused.
    let forged = SignedCommand { signature: second.sign_der(b"something else"), ..signed };
    let err = f.client.submit_signed(forged).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated));
    let fresh = SignedCommand::sign(
        registry_client::command_bytes(&register("DE*RTY*E2")),
        &f.origin(),
        &second,
    );
    let err = f.client.submit_signed(fresh).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated));
    assert_eq!(f.log_size(), size);
}

/// A configuration that names the same administrator key twice (two paths to one file, a copy)
/// gives one administrator, not two: otherwise that key could revoke itself as "not the last"
/// and leave the registry with none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_admin_key_configured_twice_is_one_administrator() {
    let dir = tempfile::tempdir().unwrap();
    let admin = P256KeyPair::generate();
    let (a, b) = (dir.path().join("admin.pub.pem"), dir.path().join("copy.pub.pem"));
    std::fs::write(&a, admin.public_key_pem()).unwrap();
    std::fs::write(&b, admin.public_key_pem()).unwrap();
    let config = registry_server::config::Config {
        admin_keys: vec![a.clone(), b, a],
        ..registry_tests::test_config(&dir.path().join("data"))
    };
    let server =
        registry_server::registry::start_registry(&config, registry_server::log::system_clock())
            .await
            .unwrap();
    let client =
        registry_client::RegistryClient::connect(&format!("http://{}", server.local_addr()))
            .await
            .unwrap();
    let err = client
        .submit(&admin, &Order::RevokeAdminKey { key_id: admin.fingerprint_hex() })
        .await
        .expect_err("the only administrator key cannot be revoked");
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(err.to_string().contains("last administrator key"), "{err}");
}
