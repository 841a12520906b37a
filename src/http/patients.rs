//! `PUT /v1/patients/{external_id}`: upsert demographics, contact points (replaced when
//! given) and consents (appended to the ledger); `GET` reads them back.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::AppState;
use super::auth::Org;
use super::json::ApiJson;
use super::problem::Problem;
use crate::messages::rfc3339;
use crate::store::{ConsentInput, ContactPointInput, PatientInput, StoreError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientBody {
    #[serde(default)]
    family_name: Option<String>,
    #[serde(default)]
    given_name: Option<String>,
    /// YYYY-MM-DD
    #[serde(default)]
    birth_date: Option<String>,
    #[serde(default)]
    sex: Option<String>,
    /// BCP 47 / ISO 639 code, e.g. `en`, `es`.
    #[serde(default)]
    language: Option<String>,
    /// IANA zone, e.g. `America/Chicago`.
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    contact_points: Option<Vec<ContactPointBody>>,
    #[serde(default)]
    consents: Vec<ConsentBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactPointBody {
    /// phone | sms | email | fax | direct
    system: String,
    value: String,
    #[serde(default, rename = "use")]
    use_code: Option<String>,
    #[serde(default)]
    rank: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    /// sms | email | fax | direct | *
    #[serde(default = "any")]
    channel: String,
    /// messaging | reminders | part2 | ...
    purpose: String,
    /// The address the consent covers, or `*`.
    #[serde(default = "any")]
    recipient: String,
    /// granted | revoked
    status: String,
    /// RFC 3339
    #[serde(default)]
    expires_at: Option<String>,
}

fn any() -> String {
    "*".into()
}

pub async fn upsert(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
    ApiJson(body): ApiJson<PatientBody>,
) -> Result<impl IntoResponse, Problem> {
    let slug = state.messages.store.organization(&org).await?.slug;
    let region = state.config.organization(&slug).phone_region;
    let input = validate(external_id, body, &region)?;
    let (row, created) = state.store.upsert_patient(&org, &input).await?;
    let view = view(&state, &org, &row.external_id).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(view),
    ))
}

pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    Ok(Json(view(&state, &org, &external_id).await?))
}

fn validate(external_id: String, body: PatientBody, region: &str) -> Result<PatientInput, Problem> {
    if external_id.is_empty() || external_id.len() > 128 {
        return Err(Problem::unprocessable(
            "external_id must be 1 to 128 characters",
        ));
    }
    if let Some(date) = &body.birth_date {
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|_| Problem::unprocessable("birth_date must be YYYY-MM-DD"))?;
    }
    if let Some(zone) = &body.time_zone {
        zone.parse::<chrono_tz::Tz>().map_err(|_| {
            Problem::unprocessable("time_zone must be an IANA zone such as America/Chicago")
        })?;
    }
    let contact_points = match body.contact_points {
        None => None,
        Some(points) => {
            let mut out = Vec::with_capacity(points.len());
            for (i, point) in points.into_iter().enumerate() {
                if !matches!(
                    point.system.as_str(),
                    "phone" | "sms" | "email" | "fax" | "direct"
                ) {
                    return Err(Problem::unprocessable(format!(
                        "contact_points[{i}].system must be phone, sms, email, fax or direct"
                    )));
                }
                if point.value.trim().is_empty() {
                    return Err(Problem::unprocessable(format!(
                        "contact_points[{i}].value is empty"
                    )));
                }
                out.push(ContactPointInput::new(
                    &point.system,
                    point.value.trim(),
                    point.use_code,
                    point.rank.unwrap_or(i as i64 + 1),
                    region,
                ));
            }
            Some(out)
        }
    };
    let mut consents = Vec::with_capacity(body.consents.len());
    for (i, consent) in body.consents.into_iter().enumerate() {
        if !matches!(consent.status.as_str(), "granted" | "revoked") {
            return Err(Problem::unprocessable(format!(
                "consents[{i}].status must be granted or revoked"
            )));
        }
        let expires_at = match consent.expires_at {
            None => None,
            Some(text) => Some(
                chrono::DateTime::parse_from_rfc3339(&text)
                    .map_err(|_| {
                        Problem::unprocessable(format!("consents[{i}].expires_at must be RFC 3339"))
                    })?
                    .timestamp_millis(),
            ),
        };
        consents.push(ConsentInput {
            // As every path records it, so the ledger compares addresses as text.
            recipient: crate::domain::consent::canonical_recipient(
                &consent.channel,
                &consent.recipient,
                region,
            ),
            channel: consent.channel,
            purpose: consent.purpose,
            status: consent.status,
            source: "api".into(),
            expires_at,
        });
    }
    Ok(PatientInput {
        external_id,
        family_name: body.family_name,
        given_name: body.given_name,
        birth_date: body.birth_date,
        sex: body.sex,
        language: body.language,
        time_zone: body.time_zone,
        address: None,
        identifiers: Vec::new(),
        contact_points,
        consents,
    })
}

async fn view(
    state: &AppState,
    org: &str,
    external_id: &str,
) -> Result<serde_json::Value, Problem> {
    let patient = match state.store.patient_by_external_id(org, external_id).await {
        Err(StoreError::NotFound) => return Err(Problem::not_found("patient not found")),
        other => other?,
    };
    let points = state.store.contact_points(&patient.id).await?;
    let consents = state.store.consents(&patient.id).await?;
    Ok(serde_json::json!({
        "id": patient.id,
        "external_id": patient.external_id,
        "family_name": patient.family_name,
        "given_name": patient.given_name,
        "birth_date": patient.birth_date,
        "sex": patient.sex,
        "language": patient.language,
        "time_zone": patient.time_zone,
        "contact_points": points.iter().map(|p| serde_json::json!({
            "system": p.system, "value": p.value, "use": p.use_code, "rank": p.rank,
        })).collect::<Vec<_>>(),
        "consents": consents.iter().map(|c| serde_json::json!({
            "channel": c.channel, "purpose": c.purpose, "recipient": c.recipient, "status": c.status,
            "source": c.source, "recorded_at": rfc3339(c.recorded_at),
            "expires_at": c.expires_at.map(rfc3339),
        })).collect::<Vec<_>>(),
        "created_at": rfc3339(patient.created_at),
        "updated_at": rfc3339(patient.updated_at),
    }))
}
