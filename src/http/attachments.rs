//! Attachments at the HTTP edge: the body of `POST /v1/messages` as JSON (attachments as
//! `content_base64`, decoded once while the body is parsed) or `multipart/form-data` (a
//! `message` part with the JSON request, then one part per file: its filename and
//! Content-Type are the attachment's), and `GET /v1/messages/{id}/attachments/{attachment_id}`.
//!
//! A file part is read into one buffer, no further than `limits.max_attachment_bytes` (a larger
//! one is refused with 413 naming the part as soon as it passes the limit). Sizes, types and
//! sealing are the message service's.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::instrument;

use super::AppState;
use super::auth::Caller;
use super::json::{json_content_type, parse_body};
use super::problem::{Problem, ProblemType};
use crate::attachments::{AttachmentUpload, safe_filename};
use crate::messages::{MessageError, SendRequest};
use crate::service::FieldError;

/// The request of `POST /v1/messages`, from JSON or multipart, and the share of the
/// attachment memory budget it holds while it is handled (a body larger than an ordinary
/// message: about twice its size, for the decoded files and their sealed copies).
pub struct MessageBody(
    pub SendRequest,
    pub Option<tokio::sync::OwnedSemaphorePermit>,
);

/// A body up to this size holds no budget (a message without files).
const SMALL_BODY: u64 = 256 * 1024;

impl FromRequest<AppState> for MessageBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let limits = &state.config.limits;
        let budget = crate::attachments::MemoryBudget::of_process(limits.attachment_memory_bytes);
        let permit = match length {
            Some(n) if n <= SMALL_BODY => None,
            Some(n) => budget.reserve(n.saturating_mul(2)).await,
            None => {
                let most = limits.message_body_bytes(state.config.server.max_body_bytes);
                budget.reserve(most as u64).await
            }
        };
        if json_content_type(req.headers()) {
            let bytes = Bytes::from_request(req, state).await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(ProblemType::PayloadTooLarge, "request body too large")
                } else {
                    Problem::new(ProblemType::InvalidBody, e.body_text())
                }
            })?;
            let request: SendRequest = parse_body(&bytes)?;
            // The message without its files is held to `server.max_body_bytes`, as every
            // other body is; the files to `[limits]`.
            let files: usize = request
                .attachments
                .iter()
                .map(|a| a.content.len().div_ceil(3) * 4)
                .sum();
            if bytes.len().saturating_sub(files) > state.config.server.max_body_bytes {
                return Err(Problem::new(
                    ProblemType::PayloadTooLarge,
                    "request body too large",
                ));
            }
            return Ok(MessageBody(request, permit));
        }
        let multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case("multipart/form-data"))
            });
        if !multipart {
            return Err(Problem::new(
                ProblemType::UnsupportedMediaType,
                "expected Content-Type: application/json or multipart/form-data",
            ));
        }
        let multipart = Multipart::from_request(req, state)
            .await
            .map_err(|e| Problem::new(ProblemType::InvalidBody, e.body_text()))?;
        // The length is a hint for the first file's buffer: the body is larger than the file.
        let request = read_multipart(multipart, state, length).await?;
        Ok(MessageBody(request, permit))
    }
}

fn multipart_problem(error: axum::extract::multipart::MultipartError) -> Problem {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(ProblemType::PayloadTooLarge, "request body too large")
    } else {
        Problem::new(ProblemType::InvalidBody, error.body_text())
    }
}

fn too_large(index: usize, detail: String) -> Problem {
    Problem::new(ProblemType::PayloadTooLarge, detail.clone()).with_errors(vec![
        FieldError::pointer(format!("/attachments/{index}"), detail),
    ])
}

/// `POST /v1/messages` as `multipart/form-data`, for the OpenAPI document: a `message` part
/// (the JSON request) and one part per file, in order (any part name; the part's filename and
/// Content-Type are the attachment's).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct MultipartSend {
    /// The request, as `application/json` would carry it (without `attachments`).
    message: SendRequest,
    /// The files.
    #[schema(value_type = Option<Vec<String>>, format = Binary)]
    file: Option<Vec<Vec<u8>>>,
}

/// The `message` part (JSON, at most `server.max_body_bytes`) and the file parts, in order.
async fn read_multipart(
    mut multipart: Multipart,
    state: &AppState,
    length: Option<u64>,
) -> Result<SendRequest, Problem> {
    let limits = &state.config.limits;
    let mut request: Option<SendRequest> = None;
    let mut files: Vec<AttachmentUpload> = Vec::new();
    let mut total: u64 = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_problem)? {
        let name = field.name().unwrap_or_default().to_string();
        let Some(filename) = field.file_name().map(str::to_string) else {
            if name != "message" {
                return Err(Problem::new(
                    ProblemType::InvalidBody,
                    format!(
                        "unexpected part {name:?}: send a \"message\" part and file parts (with a filename)"
                    ),
                ));
            }
            if request.is_some() {
                return Err(Problem::new(
                    ProblemType::InvalidBody,
                    "more than one \"message\" part",
                ));
            }
            let mut json = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(multipart_problem)? {
                if json.len() + chunk.len() > state.config.server.max_body_bytes {
                    return Err(Problem::new(
                        ProblemType::PayloadTooLarge,
                        "the \"message\" part is over server.max_body_bytes",
                    ));
                }
                json.extend_from_slice(&chunk);
            }
            request = Some(parse_body(&json)?);
            continue;
        };
        let index = files.len();
        let shown = safe_filename(&filename);
        let content_type = field
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_string();
        let hint = length
            .unwrap_or(0)
            .min(limits.max_attachment_bytes)
            .min(limits.max_message_attachment_bytes.saturating_sub(total));
        let mut content = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
        while let Some(chunk) = field.chunk().await.map_err(multipart_problem)? {
            let size = (content.len() + chunk.len()) as u64;
            if size > limits.max_attachment_bytes {
                return Err(too_large(
                    index,
                    format!(
                        "part {name:?} ({shown:?}) is over the limit of {} bytes a file",
                        limits.max_attachment_bytes
                    ),
                ));
            }
            if total + size > limits.max_message_attachment_bytes {
                return Err(too_large(
                    index,
                    format!(
                        "part {name:?} ({shown:?}) brings the attachments over the limit of {} bytes a message",
                        limits.max_message_attachment_bytes
                    ),
                ));
            }
            content.extend_from_slice(&chunk);
        }
        content.shrink_to_fit();
        total += content.len() as u64;
        files.push(AttachmentUpload {
            filename,
            content_type,
            content,
        });
        if files.len() > limits.max_attachments {
            return Err(too_large(
                index,
                format!(
                    "more than {} attachments (part {name:?})",
                    limits.max_attachments
                ),
            ));
        }
    }
    let mut request = request.ok_or_else(|| {
        Problem::new(
            ProblemType::InvalidBody,
            "a multipart request needs a \"message\" part (the JSON request)",
        )
        .with_errors(vec![FieldError::pointer("", "missing \"message\" part")])
    })?;
    request.attachments.extend(files);
    Ok(request)
}

/// `GET /v1/messages/{id}/attachments/{attachment_id}`: the bytes, with the stored
/// `Content-Type`, `Content-Disposition: attachment` and `X-Content-Type-Options: nosniff`.
/// Each read is recorded in the audit table (`attachment_read`, actor `api_key:<id>`).
#[utoipa::path(
    get,
    path = "/v1/messages/{id}/attachments/{attachment_id}",
    tag = "messages",
    operation_id = "download",
    summary = "An attachment's bytes (audited)",
    params(
        ("id" = String, Path, description = "The record's id (a ULID)."),
        ("attachment_id" = String, Path, description = "The attachment's id.")
    ),
    responses(
        (status = 200, description = "The attachment, with its stored Content-Type", content(([u8] = "application/octet-stream"), ([u8] = "*/*")))
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, message_id = %message_id, attachment_id = %attachment_id))]
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path((message_id, attachment_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let content = state
        .app
        .messages
        .attachment(
            &caller.organization_id,
            &message_id,
            &attachment_id,
            &caller.actor(),
        )
        .await
        .map_err(|e| match e {
            MessageError::NotFound(_) => Problem::not_found("attachment not found"),
            other => other.into(),
        })?;
    let mut response = Body::from(content.bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(value) =
        HeaderValue::from_str(&crate::attachments::content_disposition(&content.filename))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
