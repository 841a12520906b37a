//! One message in, one ACK out: archive the raw bytes (sealed) first, then parse, map and
//! apply, then record the outcome with the ACK — and only then answer. A redelivered MSH-10
//! gets the archived ACK and no second effect. `reprocess` replays an archived message after
//! a fix.

use std::sync::Arc;

use chrono_tz::Tz;
use tracing::{info, warn};

use super::ack::{AckCode, AckError, build_ack};
use super::mapping::{AppointmentRecord, Hl7Event, MappingError, PatientRecord, map_message};
use super::message::{Message, ParseError};
use crate::config::Hl7Config;
use crate::crypto::{CryptoError, Keyring};
use crate::store::{
    AppointmentInput, ContactPointInput, Hl7Arrival, Hl7Effects, Hl7Outcome, PatientInput, Store,
    StoreError, new_id,
};

pub struct Hl7Processor {
    pub store: Store,
    pub keyring: Keyring,
    pub organization_id: String,
    pub config: Hl7Config,
    /// Region for phone numbers without a country code (the organization's `phone_region`).
    pub phone_region: String,
    zone: Tz,
    /// The daemon's group commit: concurrent connections' messages share a commit. Without
    /// it (a one-off CLI run) each message commits alone.
    group: Option<crate::store::GroupCommit>,
}

/// Why a message could not be handled at all (then no ACK is sent, and the sender retries).
#[derive(Debug, thiserror::Error)]
pub enum Hl7Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the message cannot be sealed for the archive: {0}")]
    Seal(#[source] CryptoError),
    #[error("the archived message cannot be opened: {0}")]
    Open(#[source] CryptoError),
}

/// A message type as a metric label: `ADT^A04` when both parts are short codes, else `other`.
fn metric_type(message_type: &str, trigger: &str) -> String {
    let code = |s: &str| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if code(message_type) && (trigger.is_empty() || code(trigger)) {
        if trigger.is_empty() {
            message_type.to_ascii_uppercase()
        } else {
            format!(
                "{}^{}",
                message_type.to_ascii_uppercase(),
                trigger.to_ascii_uppercase()
            )
        }
    } else {
        "other".into()
    }
}

/// What happened to a message (for tests, logs and the CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub archive_id: String,
    pub code: AckCode,
    pub ack: String,
    /// A redelivery answered from the archive.
    pub replayed: bool,
}

impl Hl7Processor {
    pub async fn new(
        store: Store,
        keyring: Keyring,
        config: Hl7Config,
        phone_region: &str,
        group: Option<crate::store::GroupCommit>,
    ) -> Result<Arc<Self>, StoreError> {
        let org = store
            .organizations()
            .ensure(&config.organization, &config.organization)
            .await?;
        let zone = config.time_zone.parse().unwrap_or(Tz::UTC);
        Ok(Arc::new(Self {
            store,
            keyring,
            organization_id: org.id,
            config,
            phone_region: phone_region.to_string(),
            zone,
            group,
        }))
    }

    /// Handles one frame's payload. `Err` only when even the archive cannot be written (then
    /// no ACK is sent and the sender will retry).
    pub async fn handle(&self, raw: &[u8]) -> Result<Outcome, Hl7Error> {
        let started = std::time::Instant::now();
        let message = match parse_guarded(raw) {
            Ok(message) => message,
            Err(e) => {
                let outcome = self.reject_unparsable(raw, &e.to_string()).await?;
                crate::metrics::metrics().hl7_answered(
                    "unparsable",
                    None,
                    outcome.code.as_str(),
                    started.elapsed().as_secs_f64(),
                );
                return Ok(outcome);
            }
        };
        let id = new_id("hl7");
        let sealed = self.keyring.seal(raw, &id).map_err(Hl7Error::Seal)?;
        let outcome = self.handle_sealed(raw, &message, id, sealed).await?;
        let header = &message.header;
        crate::metrics::metrics().hl7_answered(
            &metric_type(&header.message_type, &header.trigger),
            Some(&format!(
                "{}^{}",
                header.sending_application, header.sending_facility
            )),
            outcome.code.as_str(),
            started.elapsed().as_secs_f64(),
        );
        Ok(outcome)
    }

    /// [`Hl7Processor::handle`] once the message is parsed and sealed.
    async fn handle_sealed(
        &self,
        raw: &[u8],
        message: &Message,
        id: String,
        sealed: Vec<u8>,
    ) -> Result<Outcome, StoreError> {
        let header = &message.header;
        let arrival = Hl7Arrival {
            id,
            organization_id: self.organization_id.clone(),
            control_id: Some(header.control_id.clone()).filter(|c| !c.is_empty()),
            sending_application: header.sending_application.clone(),
            sending_facility: header.sending_facility.clone(),
            message_type: Some(format!("{}^{}", header.message_type, header.trigger)),
            version: Some(header.version.clone()),
            content_hash: openssl::hash::hash(openssl::hash::MessageDigest::sha256(), raw)
                .map(hex::encode)
                .unwrap_or_default(),
            raw: sealed,
        };
        match self.judge(message) {
            // A merge touches many rows: archived first, applied, then its outcome recorded.
            Ok(Hl7Event::PatientMerge { .. }) => {
                let (row, new) = self.store.hl7().archive(&arrival).await?;
                if let Some(outcome) = replayed(&row, new) {
                    return Ok(outcome);
                }
                self.process(&row.id, message).await
            }
            // Everything else: archive, effects and outcome in one transaction.
            Ok(event) => {
                let effects = self.effects(event)?;
                let applied = Hl7Outcome {
                    status: "applied".into(),
                    error: None,
                    ack: build_ack(
                        Some(&message.header),
                        AckCode::Accept,
                        &arrival.id,
                        &timestamp(),
                        None,
                    ),
                };
                let recorded = match &self.group {
                    Some(group) => {
                        group
                            .record_hl7(crate::store::Hl7Record {
                                arrival: arrival.clone(),
                                effects,
                                outcome: applied.clone(),
                            })
                            .await
                    }
                    None => self.store.hl7().record(&arrival, &effects, &applied).await,
                };
                match recorded {
                    Ok(None) => Ok(self.done(&arrival.id, message, AckCode::Accept, applied.ack)),
                    Ok(Some(row)) => self.replay_or_process(row, message).await,
                    Err(e) => {
                        warn!(archive_id = %arrival.id, error = %e, "applying an HL7 message failed");
                        self.record_refusal(&arrival, message, AckCode::Error, &storage_failure())
                            .await
                    }
                }
            }
            Err((code, error)) => self.record_refusal(&arrival, message, code, &error).await,
        }
    }

    /// Archives a message that is not applied (AE/AR), with its ACK, in one transaction.
    async fn record_refusal(
        &self,
        arrival: &Hl7Arrival,
        message: &Message,
        code: AckCode,
        error: &AckError,
    ) -> Result<Outcome, StoreError> {
        let outcome = Hl7Outcome {
            status: if code == AckCode::Reject {
                "rejected"
            } else {
                "error"
            }
            .into(),
            error: Some(format!("{}-{}: {}", error.segment, error.field, error.text)),
            ack: build_ack(
                Some(&message.header),
                code,
                &arrival.id,
                &timestamp(),
                Some(error),
            ),
        };
        match self
            .store
            .hl7()
            .record(arrival, &Hl7Effects::default(), &outcome)
            .await?
        {
            None => Ok(self.done(&arrival.id, message, code, outcome.ack)),
            Some(row) => self.replay_or_process(row, message).await,
        }
    }

    /// A message archived before: its archived ACK, or (interrupted mid-way) processed again.
    async fn replay_or_process(
        &self,
        row: crate::store::Hl7Row,
        message: &Message,
    ) -> Result<Outcome, StoreError> {
        match replayed(&row, false) {
            Some(outcome) => Ok(outcome),
            None => self.process(&row.id, message).await,
        }
    }

    fn done(&self, archive_id: &str, message: &Message, code: AckCode, ack: String) -> Outcome {
        let header = &message.header;
        info!(archive_id, message_type = %format!("{}^{}", header.message_type, header.trigger), ack = code.as_str(), "HL7 message processed");
        Outcome {
            archive_id: archive_id.to_string(),
            code,
            ack,
            replayed: false,
        }
    }

    /// Applies an archived message again (after a fix), whatever its status.
    pub async fn reprocess(&self, archive_id: &str) -> Result<Outcome, Hl7Error> {
        let row = self.store.hl7().get(archive_id).await?;
        let raw = self
            .keyring
            .open(&row.raw, &row.id)
            .map_err(Hl7Error::Open)?;
        match parse_guarded(&raw) {
            Ok(message) => Ok(self.process(&row.id, &message).await?),
            Err(e) => {
                let ack = build_ack(
                    None,
                    AckCode::Reject,
                    &row.id,
                    &timestamp(),
                    Some(&parse_error(&e)),
                );
                self.store
                    .hl7()
                    .finish(&row.id, "rejected", Some(&e.to_string()), &ack)
                    .await?;
                Ok(Outcome {
                    archive_id: row.id,
                    code: AckCode::Reject,
                    ack,
                    replayed: false,
                })
            }
        }
    }

    /// Validates and maps a message, without writing anything. A panic in the mapping (a bug
    /// that some input reaches) is caught: the message gets AR and stays archived with the
    /// reason, instead of killing the connection and being redelivered forever.
    fn judge(&self, message: &Message) -> Result<Hl7Event, (AckCode, AckError)> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.judge_unguarded(message)
        }))
        .unwrap_or_else(|_| {
            warn!("mapping an HL7 message panicked; answering AR and keeping it");
            Err((
                AckCode::Reject,
                AckError {
                    segment: "MSH".into(),
                    field: 9,
                    code: 207,
                    text: INTERNAL_FAILURE.into(),
                },
            ))
        })
    }

    fn judge_unguarded(&self, message: &Message) -> Result<Hl7Event, (AckCode, AckError)> {
        #[cfg(test)]
        if message.header.control_id == tests::PANIC_HOOK {
            panic!("test hook: mapping panicked");
        }
        let header = &message.header;
        if let Err(e) = message.validate_header() {
            return Err((AckCode::Reject, parse_error(&e)));
        }
        if !self
            .config
            .processing_ids
            .iter()
            .any(|p| p == &header.processing_id)
        {
            return Err((
                AckCode::Reject,
                AckError {
                    segment: "MSH".into(),
                    field: 11,
                    code: 202,
                    text: format!(
                        "processing id {:?} is not accepted here",
                        header.processing_id
                    ),
                },
            ));
        }
        map_message(message, self.zone).map_err(|e| match e {
            MappingError::Unsupported(kind) => (
                AckCode::Reject,
                AckError {
                    segment: "MSH".into(),
                    field: 9,
                    code: 200,
                    text: format!("message type {kind} is not supported"),
                },
            ),
            MappingError::BadContent {
                segment,
                field,
                problem,
                reason,
            } => (
                AckCode::Error,
                AckError {
                    segment,
                    field,
                    code: problem.hl7_code(),
                    text: reason,
                },
            ),
        })
    }

    /// Judges and applies a message already archived (reprocessing, merges), then records the
    /// outcome on its archive row.
    async fn process(&self, archive_id: &str, message: &Message) -> Result<Outcome, StoreError> {
        let header = &message.header;
        let verdict = match self.judge(message) {
            Err(refusal) => Err(refusal),
            Ok(event) => self.apply(event).await.map_err(|e| {
                warn!(archive_id, error = %e, "applying an HL7 message failed");
                (AckCode::Error, storage_failure())
            }),
        };
        let (code, status, error) = match &verdict {
            Ok(()) => (AckCode::Accept, "applied", None),
            Err((AckCode::Reject, e)) => (AckCode::Reject, "rejected", Some(e)),
            Err((_, e)) => (AckCode::Error, "error", Some(e)),
        };
        let ack = build_ack(Some(header), code, archive_id, &timestamp(), error);
        let detail = error.map(|e| format!("{}-{}: {}", e.segment, e.field, e.text));
        self.store
            .hl7()
            .finish(archive_id, status, detail.as_deref(), &ack)
            .await?;
        info!(archive_id, message_type = %format!("{}^{}", header.message_type, header.trigger), ack = code.as_str(), "HL7 message processed");
        Ok(Outcome {
            archive_id: archive_id.to_string(),
            code,
            ack,
            replayed: false,
        })
    }

    /// An oversize frame: its first bytes are archived as rejected; the AR echoes MSH-10 when
    /// the header could be read.
    pub async fn reject_oversize(&self, head: &[u8], reason: &str) -> Result<String, StoreError> {
        let header = head
            .split(|&b| b == b'\r' || b == b'\n')
            .next()
            .and_then(|line| parse_guarded(line).ok())
            .map(|m| m.header);
        let error = AckError {
            segment: "MSH".into(),
            field: 1,
            code: 207,
            text: reason.to_string(),
        };
        let ack = build_ack(
            header.as_ref(),
            AckCode::Reject,
            &new_id("hl7"),
            &timestamp(),
            Some(&error),
        );
        let keyring = self.keyring.clone();
        let id = self
            .store
            .hl7()
            .archive_unparsable(
                &self.organization_id,
                |id| keyring.seal(head, id).unwrap_or_default(),
                reason,
                &ack,
            )
            .await?;
        warn!(archive_id = %id, "oversize HL7 frame rejected");
        Ok(ack)
    }

    /// What arrived before a peer disconnected mid-frame: archived as rejected, no ACK.
    pub async fn archive_truncated(&self, partial: &[u8]) -> Result<String, StoreError> {
        let keyring = self.keyring.clone();
        self.store
            .hl7()
            .archive_unparsable(
                &self.organization_id,
                |id| keyring.seal(partial, id).unwrap_or_default(),
                "connection closed in the middle of a frame",
                "",
            )
            .await
    }

    async fn reject_unparsable(&self, raw: &[u8], reason: &str) -> Result<Outcome, StoreError> {
        let error = AckError {
            segment: "MSH".into(),
            field: 1,
            code: 100,
            text: reason.to_string(),
        };
        let ack_id = new_id("hl7");
        let ack = build_ack(None, AckCode::Reject, &ack_id, &timestamp(), Some(&error));
        let keyring = self.keyring.clone();
        let id = self
            .store
            .hl7()
            .archive_unparsable(
                &self.organization_id,
                |id| keyring.seal(raw, id).unwrap_or_default(),
                reason,
                &ack,
            )
            .await?;
        warn!(archive_id = %id, "unparsable HL7 input rejected and archived");
        Ok(Outcome {
            archive_id: id,
            code: AckCode::Reject,
            ack,
            replayed: false,
        })
    }

    /// The writes an upsert or appointment event asks for (merges are applied by `apply`).
    /// The patient's key identifier is resolved to its holder's external id by the batch
    /// that writes them ([`crate::store::Hl7::record_many`]), one query for the batch.
    fn effects(&self, event: Hl7Event) -> Result<Hl7Effects, StoreError> {
        Ok(match event {
            Hl7Event::PatientUpsert(patient) => {
                let (input, key) = self.patient_input(&patient)?;
                Hl7Effects {
                    patient: Some(input),
                    patient_key: Some(key),
                    appointment: None,
                }
            }
            Hl7Event::Appointment {
                trigger,
                patient,
                appointment,
            } => {
                let (input, key) = self.patient_input(&patient)?;
                Hl7Effects {
                    patient: Some(input),
                    patient_key: Some(key),
                    appointment: Some((appointment_input(&appointment, "hl7"), trigger)),
                }
            }
            Hl7Event::PatientMerge { .. } => Hl7Effects::default(),
        })
    }

    /// Writes an event's effects (idempotent: applying twice leaves the same state).
    async fn apply(&self, event: Hl7Event) -> Result<(), StoreError> {
        match event {
            Hl7Event::PatientUpsert(patient) => {
                self.upsert_patient(&patient).await?;
            }
            Hl7Event::PatientMerge { surviving, prior } => {
                let surviving_id = self.upsert_patient(&surviving).await?;
                let mut old = Vec::new();
                for identifier in prior {
                    let found = match self
                        .store
                        .patients()
                        .id_by_identifier(
                            &self.organization_id,
                            &identifier.authority,
                            &identifier.id,
                        )
                        .await?
                    {
                        Some(id) => Some(id),
                        None => self
                            .store
                            .patients()
                            .by_external_id(&self.organization_id, &identifier.id)
                            .await
                            .ok()
                            .map(|p| p.id),
                    };
                    old.extend(found);
                }
                self.store.patients().merge(&surviving_id, &old).await?;
            }
            Hl7Event::Appointment {
                trigger,
                patient,
                appointment,
            } => {
                let patient_id = self.upsert_patient(&patient).await?;
                let input = appointment_input(&appointment, "hl7");
                self.store
                    .appointments()
                    .upsert(&self.organization_id, &patient_id, &input, &trigger)
                    .await?;
            }
        }
        Ok(())
    }

    /// Upserts the patient keyed by the configured identifier; returns its id.
    async fn upsert_patient(&self, record: &PatientRecord) -> Result<String, StoreError> {
        let (mut input, (authority, value)) = self.patient_input(record)?;
        // A merged-away patient's identifier resolves to the survivor.
        if let Some(external_id) = self
            .store
            .patients()
            .external_id_for_identifier(&self.organization_id, &authority, &value)
            .await?
        {
            input.external_id = external_id;
        }
        let (row, _) = self
            .store
            .patients()
            .upsert(&self.organization_id, &input)
            .await?;
        Ok(row.id)
    }

    /// The store's form of a mapped patient, keyed by the configured identifier, and that
    /// identifier as `(authority, value)`: the caller resolves it to the external id its
    /// holder is known by now (a merged-away patient's, the survivor's).
    fn patient_input(
        &self,
        record: &PatientRecord,
    ) -> Result<(PatientInput, (String, String)), StoreError> {
        let key = match &self.config.identifier_authority {
            Some(authority) => record
                .identifiers
                .iter()
                .find(|i| &i.authority == authority),
            None => None,
        }
        .or_else(|| {
            record
                .identifiers
                .iter()
                .find(|i| i.id_type.as_deref() == Some("MR"))
        })
        .or_else(|| record.identifiers.iter().find(|i| !is_ssn_identifier(i)))
        .or_else(|| record.identifiers.first());
        let Some(key) = key else {
            return Err(StoreError::Conflict("patient without identifier".into()));
        };
        // An SSN is kept (and compared) only as its keyed digest, never in clear.
        let value_of = |i: &crate::hl7::mapping::Identifier| {
            if is_ssn_identifier(i) {
                self.keyring
                    .identifier_digests(&i.id)
                    .into_iter()
                    .next()
                    .unwrap_or_default()
            } else {
                i.id.clone()
            }
        };
        let key_value = value_of(key);
        let input = PatientInput {
            external_id: key_value.clone(),
            family_name: record.family_name.clone(),
            given_name: record.given_name.clone(),
            birth_date: record.birth_date.map(|d| d.to_string()),
            sex: record.sex.clone(),
            language: record.language.clone(),
            time_zone: None,
            address: record
                .address
                .as_ref()
                .and_then(|a| serde_json::to_string(a).ok()),
            contact_points: Some(
                record
                    .contact_points
                    .iter()
                    .map(|c| {
                        ContactPointInput::new(
                            &c.system,
                            &c.value,
                            c.use_code.clone(),
                            c.rank,
                            &self.phone_region,
                        )
                    })
                    .collect(),
            ),
            consents: Vec::new(),
            // Each identifier under its namespace id and, when the feed sends it, under its
            // universal id (OID) too: documents name the authority by OID.
            identifiers: record
                .identifiers
                .iter()
                .flat_map(|i| {
                    let value = value_of(i);
                    let by_oid = i
                        .universal_id
                        .as_ref()
                        .filter(|oid| **oid != i.authority)
                        .map(|oid| (value.clone(), oid.clone(), i.id_type.clone()));
                    std::iter::once((value.clone(), i.authority.clone(), i.id_type.clone()))
                        .chain(by_oid)
                })
                .collect(),
        };
        Ok((input, (key.authority.clone(), key_value)))
    }
}

/// The store's form of a mapped appointment.
pub fn appointment_input(a: &AppointmentRecord, source: &str) -> AppointmentInput {
    AppointmentInput {
        filler_id: a.filler_id.clone(),
        placer_id: a.placer_id.clone(),
        start_at: a.start.timestamp_millis(),
        start_offset_minutes: i64::from(a.start.offset().local_minus_utc() / 60),
        duration_minutes: a.duration_minutes,
        status: a.status,
        appointment_type: a.appointment_type.clone(),
        reason: a.reason.clone(),
        location: a.location.clone(),
        location_code: a.location_code.clone(),
        provider_id: a.provider_id.clone(),
        provider_name: a.provider_name.clone(),
        source: source.to_string(),
    }
}

/// The reason kept with a message whose parsing or mapping panicked.
const INTERNAL_FAILURE: &str =
    "the message could not be processed (internal failure); it is kept for review";

/// [`Message::parse`] with a panic (in hl7-parser or our layer) caught and turned into a
/// parse error, so the frame is archived as rejected and answered AR.
fn parse_guarded(raw: &[u8]) -> Result<Message, ParseError> {
    std::panic::catch_unwind(|| Message::parse(raw)).unwrap_or_else(|_| {
        warn!(
            bytes = raw.len(),
            "parsing an HL7 message panicked; answering AR"
        );
        Err(ParseError::Syntax(INTERNAL_FAILURE.into()))
    })
}

/// AE 207: the store refused the write; the message stays archived for reprocessing.
fn storage_failure() -> AckError {
    AckError {
        segment: "MSH".into(),
        field: 10,
        code: 207,
        text: "the message could not be stored; it is kept for reprocessing".into(),
    }
}

/// The archived answer to a redelivered message, unless it was interrupted mid-way.
fn replayed(row: &crate::store::Hl7Row, new: bool) -> Option<Outcome> {
    let ack = row
        .ack
        .clone()
        .filter(|a| !new && row.status != "received" && !a.is_empty())?;
    info!(archive_id = %row.id, "redelivered message: answered from the archive");
    Some(Outcome {
        archive_id: row.id.clone(),
        code: ack_code_of(&ack),
        ack,
        replayed: true,
    })
}

fn parse_error(e: &ParseError) -> AckError {
    let (field, code) = match e {
        ParseError::BadVersion(_) => (12, 203),
        ParseError::MissingHeader(f) => (*f, 101),
        _ => (1, 100),
    };
    AckError {
        segment: "MSH".into(),
        field,
        code,
        text: e.to_string(),
    }
}

fn ack_code_of(ack: &str) -> AckCode {
    if ack.contains("MSA|AA") {
        AckCode::Accept
    } else if ack.contains("MSA|AE") {
        AckCode::Error
    } else {
        AckCode::Reject
    }
}

fn timestamp() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%S+0000").to_string()
}

/// Whether an HL7 identifier is a Social Security number (by its authority, OID or type).
fn is_ssn_identifier(i: &crate::hl7::mapping::Identifier) -> bool {
    crate::domain::identifier::is_ssn(&i.authority, i.id_type.as_deref())
        || i.universal_id
            .as_deref()
            .is_some_and(|oid| crate::domain::identifier::is_ssn(oid, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MSH-10 that makes the mapping panic (tests only): no input we know of panics the
    /// parser or the mapping once overflows are checked, so the guard is tested this way.
    pub(super) const PANIC_HOOK: &str = "PANIC-HOOK";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_that_panics_the_mapping_gets_ar_and_stays_archived() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::config::Config::from_toml("").expect("config");
        config.data_dir = dir.path().to_path_buf();
        let core = crate::daemon::Core::open(config.clone())
            .await
            .expect("core");
        let processor = Hl7Processor::new(
            core.store.clone(),
            core.keyring.clone(),
            config.hl7.clone(),
            "US",
            None,
        )
        .await
        .expect("processor");
        let raw = format!(
            "MSH|^~\\&|A|B|C|D|2024||ADT^A04|{PANIC_HOOK}|P|2.5\rPID|1||MRN-P^^^^MR||Panic^Pat"
        );
        let outcome = processor.handle(raw.as_bytes()).await.expect("handled");
        assert_eq!(outcome.code, AckCode::Reject);
        assert!(
            outcome.ack.contains(&format!("MSA|AR|{PANIC_HOOK}")),
            "{}",
            outcome.ack
        );
        let rows = core
            .store
            .hl7()
            .by_status(&["rejected"], 10)
            .await
            .expect("archive");
        assert_eq!(rows.len(), 1);
        assert!(
            rows[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("internal failure")),
            "{:?}",
            rows[0].error
        );
        let kept = core.keyring.open(&rows[0].raw, &rows[0].id).expect("open");
        assert_eq!(kept, raw.as_bytes(), "the raw frame is kept, sealed");
        // The engine's redelivery gets the archived AR; nothing runs twice.
        let again = processor.handle(raw.as_bytes()).await.expect("again");
        assert!(again.replayed && again.code == AckCode::Reject);
        core.store.close().await;
    }
}
