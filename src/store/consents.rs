//! The consent ledger: opt-outs and opt-ins per channel, purpose and address (SMS keywords
//! record the number; the API records them per patient), and Part 2 consents. This file
//! writes and reads entries; what they decide is `crate::domain::consent`'s (one rule for
//! every path). The loaders' `WHERE` clauses are that rule's conditions in SQL
//! ([`push_opt_out_filter`] mirrors `consent::covers_opt_out`, [`Store::part2_consents`]
//! loads a superset of what `consent::covers_part2` can pick), so reading fewer rows never
//! changes a decision; `tests/consent_conformance.rs` checks it on both databases.
//!
//! Recipients are stored canonical (`domain::Address::canonical`): the rule compares them as
//! text, in SQL and in Rust alike.

use super::touch_batch::{IN_CHUNK, push_list, unique};
use super::{Consents, Result, new_id, now_ms, on_db};
use crate::domain::consent::{
    ANY, ConsentEntry, ConsentLedger, GRANTED, PART2, Part2Consents, REVOKED,
};

/// One ledger entry.
#[derive(Debug, Clone)]
pub struct ConsentChange {
    pub organization_id: String,
    pub patient_id: Option<String>,
    pub channel: String,
    /// `*` for every purpose.
    pub purpose: String,
    /// The address it covers, canonical (`domain::Address`), or `*` for every address of the
    /// patient.
    pub recipient: String,
    /// `granted` or `revoked`.
    pub status: String,
    /// `sms-keyword`, `voice-keypad`, `api`, `hl7`, `staff`.
    pub source: String,
}

/// One disclosure's question to the ledger ([`Consents::entries`]'s arguments), for
/// [`Consents::ledgers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentLookup {
    pub organization_id: String,
    /// The ledger purpose (`disclosure::ledger_purpose`).
    pub purpose: String,
    pub channel: String,
    /// Canonical (`domain::Address`).
    pub recipient: String,
    pub patient_id: Option<String>,
}

/// The columns a [`ConsentEntry`] is read from.
pub(super) const ENTRY_COLUMNS: &str =
    "id, patient_id, channel, purpose, recipient, status, recorded_at, expires_at";

/// Appends to `qb` (after `WHERE`) the conditions of `consent::covers_opt_out` that do not
/// depend on the address or patient: the organization, the purpose (or `*`), `granted` /
/// `revoked`, unexpired at `now`, one of `channels` (or `*`). Every constant is bound from
/// `domain::consent`, so the SQL cannot drift from the Rust.
pub(super) fn push_opt_out_filter<DB>(
    qb: &mut sqlx::QueryBuilder<DB>,
    organization_id: &str,
    purpose: &str,
    channels: &[String],
    now: i64,
) where
    DB: sqlx::Database,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    qb.push("organization_id = ")
        .push_bind(organization_id.to_string())
        .push(" AND purpose IN (")
        .push_bind(purpose.to_string())
        .push(", ")
        .push_bind(ANY.to_string())
        .push(") AND status IN (")
        .push_bind(GRANTED.to_string())
        .push(", ")
        .push_bind(REVOKED.to_string())
        .push(") AND (expires_at IS NULL OR expires_at > ")
        .push_bind(now)
        .push(") AND channel IN (");
    push_list(qb, channels);
    qb.push(", ").push_bind(ANY.to_string()).push(")");
}

fn select_entries<DB: sqlx::Database>() -> sqlx::QueryBuilder<DB> {
    sqlx::QueryBuilder::new(format!("SELECT {ENTRY_COLUMNS} FROM consents WHERE "))
}

impl Consents<'_> {
    pub async fn record(self, change: &ConsentChange) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO consents (id, organization_id, patient_id, channel, purpose, recipient, status, source, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new_id("cns")).bind(&change.organization_id).bind(&change.patient_id).bind(&change.channel)
        .bind(&change.purpose).bind(&change.recipient).bind(&change.status).bind(&change.source).bind(now)
        .execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    /// The consent entries of one organization and purpose that can decide opt-outs for one
    /// address on one channel, unexpired now: entries for the address, and the patient's
    /// entries for every address (`*`). [`Store::consent_ledger`] loads the same for a batch.
    pub async fn entries(
        self,
        organization_id: &str,
        purpose: &str,
        channel: &str,
        recipient: &str,
        patient_id: Option<&str>,
    ) -> Result<ConsentLedger> {
        let now = now_ms();
        let channels = [channel.to_string()];
        let entries: Vec<ConsentEntry> = on_db!(self.db(), |pool| {
            let mut qb = select_entries();
            push_opt_out_filter(&mut qb, organization_id, purpose, &channels, now);
            qb.push(" AND (recipient = ")
                .push_bind(recipient.to_string())
                .push(" OR (recipient = ")
                .push_bind(ANY.to_string())
                .push(" AND patient_id = ")
                .push_bind(patient_id.map(str::to_string))
                .push("))");
            qb.build_query_as().fetch_all(pool).await
        })?;
        Ok(ConsentLedger::new(entries))
    }

    /// [`Consents::entries`] for many lookups at once (concurrent send attempts, grouped):
    /// one statement per organization, purpose and channel among them, whose entries answer
    /// each of its lookups (a ledger may hold entries for the group's other addresses and
    /// patients, which decide nothing for this one). Returns one ledger per lookup, in order.
    pub async fn ledgers(self, lookups: &[ConsentLookup]) -> Result<Vec<ConsentLedger>> {
        let now = now_ms();
        let mut groups: Vec<(&str, &str, &str)> = lookups
            .iter()
            .map(|l| {
                (
                    l.organization_id.as_str(),
                    l.purpose.as_str(),
                    l.channel.as_str(),
                )
            })
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let mut ledgers = std::collections::HashMap::with_capacity(groups.len());
        for group in groups {
            let (organization_id, purpose, channel) = group;
            let members = lookups.iter().filter(|l| {
                (
                    l.organization_id.as_str(),
                    l.purpose.as_str(),
                    l.channel.as_str(),
                ) == group
            });
            let recipients = unique(members.clone().map(|l| l.recipient.as_str()));
            let patients = unique(members.filter_map(|l| l.patient_id.as_deref()));
            let channels = [channel.to_string()];
            let mut entries: Vec<ConsentEntry> = Vec::new();
            // Batches are far smaller than a chunk; a larger one takes one statement per chunk
            // of recipients and of patients, side by side, until both are spent.
            let mut recipient_chunks = recipients.chunks(IN_CHUNK);
            let mut patient_chunks = patients.chunks(IN_CHUNK);
            loop {
                let (recipients, patients) = match (recipient_chunks.next(), patient_chunks.next())
                {
                    (None, None) => break,
                    (r, p) => (r.unwrap_or_default(), p.unwrap_or_default()),
                };
                let rows: Vec<ConsentEntry> = on_db!(self.db(), |pool| {
                    let mut qb = select_entries();
                    push_opt_out_filter(&mut qb, organization_id, purpose, &channels, now);
                    qb.push(" AND (recipient IN (");
                    if recipients.is_empty() {
                        qb.push("NULL");
                    } else {
                        push_list(&mut qb, recipients);
                    }
                    qb.push(")");
                    if !patients.is_empty() {
                        qb.push(" OR (recipient = ")
                            .push_bind(ANY.to_string())
                            .push(" AND patient_id IN (");
                        push_list(&mut qb, patients);
                        qb.push("))");
                    }
                    qb.push(")");
                    qb.build_query_as().fetch_all(pool).await
                })?;
                entries.extend(rows);
            }
            ledgers.insert(group, ConsentLedger::new(entries));
        }
        Ok(lookups
            .iter()
            .map(|l| {
                ledgers
                    .get(&(
                        l.organization_id.as_str(),
                        l.purpose.as_str(),
                        l.channel.as_str(),
                    ))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Every Part 2 consent entry of these patients (any channel, recipient, status or
    /// expiry: the newest covering one decides, in `domain::consent`).
    pub async fn part2(self, patient_ids: &[&str]) -> Result<Part2Consents> {
        let mut entries = Vec::new();
        for chunk in unique(patient_ids.iter().copied()).chunks(IN_CHUNK) {
            let rows: Vec<ConsentEntry> = on_db!(self.db(), |pool| {
                let mut qb = select_entries();
                qb.push("purpose = ")
                    .push_bind(PART2.to_string())
                    .push(" AND patient_id IN (");
                push_list(&mut qb, chunk);
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await
            })?;
            entries.extend(rows);
        }
        Ok(Part2Consents::new(entries))
    }

    /// Rewrites, once per database, the recipients of entries recorded before every path
    /// wrote them canonical (the API stored what it was given): `canonical(organization slug,
    /// channel, recipient)` is the form (`domain::consent::canonical_recipient` in the
    /// organization's phone region). Idempotent, so daemons starting together may both run
    /// it. Returns how many entries changed.
    pub async fn canonicalize_recipients(
        self,
        canonical: impl Fn(&str, &str, &str) -> String,
    ) -> Result<u64> {
        const DONE: &str = "consent-recipients-canonical";
        if self.store.cursors().get(DONE).await?.is_some() {
            return Ok(0);
        }
        let mut after = String::new();
        let mut changed = 0;
        loop {
            let rows: Vec<(String, String, String, String)> =
                on_db!(self.db(), |pool| sqlx::query_as(
                    "SELECT c.id, o.slug, c.channel, c.recipient FROM consents c
                 JOIN organizations o ON o.id = c.organization_id
                 WHERE c.recipient <> $1 AND c.id > $2 ORDER BY c.id LIMIT 1000",
                )
                .bind(ANY)
                .bind(&after)
                .fetch_all(pool)
                .await)?;
            let Some((last, ..)) = rows.last() else { break };
            after = last.clone();
            let fixes: Vec<(String, String)> = rows
                .iter()
                .filter_map(|(id, slug, channel, recipient)| {
                    let form = canonical(slug, channel, recipient);
                    (form != *recipient).then(|| (id.clone(), form))
                })
                .collect();
            if fixes.is_empty() {
                continue;
            }
            on_db!(self.db(), |pool| {
                let mut tx = pool.begin().await?;
                for (id, form) in &fixes {
                    sqlx::query("UPDATE consents SET recipient = $2 WHERE id = $1")
                        .bind(id)
                        .bind(form)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            });
            changed += fixes.len() as u64;
        }
        self.store.cursors().set(DONE, 1).await?;
        Ok(changed)
    }

    /// The whole ledger of an organization, oldest first (operators; the conformance test
    /// decides over it to check what the loaders leave out).
    pub async fn all(self, organization_id: &str) -> Result<Vec<ConsentEntry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM consents WHERE organization_id = $1 ORDER BY recorded_at, id"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            sqlx::AssertSqlSafe(sql.clone())
        )
        .bind(organization_id)
        .fetch_all(pool)
        .await)?)
    }

    /// The consent entries of one organization and purpose that can decide opt-outs for
    /// these addresses (on these channels) or these patients, unexpired now (store time, as
    /// [`Store::consent_entries`] for one address).
    pub async fn ledger(
        self,
        organization_id: &str,
        purpose: &str,
        channels: &[&str],
        recipients: &[&str],
        patient_ids: &[&str],
    ) -> Result<ConsentLedger> {
        let now = now_ms();
        let mut entries = Vec::new();
        let channels = unique(channels.iter().copied());
        let recipients: Vec<String> = unique(recipients.iter().copied())
            .into_iter()
            .filter(|r| r != ANY)
            .collect();
        let head = format!(
            "SELECT {} FROM consents WHERE ",
            super::consents::ENTRY_COLUMNS
        );
        for chunk in recipients.chunks(IN_CHUNK) {
            let rows: Vec<ConsentEntry> = on_db!(self.db(), |pool| {
                let mut qb = sqlx::QueryBuilder::new(head.clone());
                push_opt_out_filter(&mut qb, organization_id, purpose, &channels, now);
                qb.push(" AND recipient IN (");
                push_list(&mut qb, chunk);
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await
            })?;
            entries.extend(rows);
        }
        for chunk in unique(patient_ids.iter().copied()).chunks(IN_CHUNK) {
            let rows: Vec<ConsentEntry> = on_db!(self.db(), |pool| {
                let mut qb = sqlx::QueryBuilder::new(head.clone());
                push_opt_out_filter(&mut qb, organization_id, purpose, &channels, now);
                qb.push(" AND recipient = ")
                    .push_bind(ANY.to_string())
                    .push(" AND patient_id IN (");
                push_list(&mut qb, chunk);
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await
            })?;
            entries.extend(rows);
        }
        Ok(ConsentLedger::new(entries))
    }
}
