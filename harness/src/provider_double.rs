//! OAuth provider doubles on 127.0.0.1 that check the real protocol: authorization code with
//! PKCE S256 (the double verifies the verifier against the challenge it saw at consent), client
//! authentication, redirect URI binding, single-use codes, the refresh grant and revocation
//! (Google: form `token`; Dropbox: bearer header). Each can be told to fail or to be slow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The client secret the double expects (one per test process, never a published value).
pub fn client_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| crate::fresh_key("client"))
}

/// How the double answers token and revocation calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Normal = 0,
    ServerError = 1,
    Slow = 2,
}

#[derive(Debug, Clone)]
struct Grant {
    provider: String,
    client_id: String,
    redirect_uri: String,
    challenge: String,
}

#[derive(Default)]
struct Book {
    codes: HashMap<String, Grant>,
    refresh_tokens: HashMap<String, String>,
    access_tokens: HashMap<String, String>,
    revoked: Vec<String>,
    trace_headers: Vec<String>,
    forms: Vec<HashMap<String, String>>,
}

#[derive(Clone, Default)]
struct Shared {
    book: Arc<Mutex<Book>>,
    counter: Arc<AtomicU64>,
    mode: Arc<AtomicU8>,
}

pub struct ProviderDouble {
    pub addr: SocketAddr,
    shared: Shared,
}

fn oauth_error(status: StatusCode, code: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "error_description": format!("double says {code}")})),
    )
        .into_response()
}

impl Shared {
    async fn gate(&self) -> Option<Response> {
        match self.mode.load(Ordering::SeqCst) {
            1 => Some((StatusCode::SERVICE_UNAVAILABLE, "down").into_response()),
            2 => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                None
            }
            _ => None,
        }
    }

    /// The form of a provider call, recorded, unless the mode answers for it first.
    async fn receive(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<HashMap<String, String>, Response> {
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        self.record(headers, &form);
        match self.gate().await {
            Some(response) => Err(response),
            None => Ok(form),
        }
    }

    fn record(&self, headers: &HeaderMap, form: &HashMap<String, String>) {
        let mut book = self.book.lock().unwrap();
        if let Some(h) = headers.get("x-amzn-trace-id").and_then(|v| v.to_str().ok()) {
            book.trace_headers.push(h.to_owned());
        }
        book.forms.push(form.clone());
    }

    fn issue_tokens(&self, provider: &str) -> (String, String) {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let access = format!("at-{provider}-{n}");
        let refresh = format!("rt-{provider}-{n}");
        let mut book = self.book.lock().unwrap();
        book.refresh_tokens
            .insert(refresh.clone(), provider.to_owned());
        book.access_tokens
            .insert(access.clone(), provider.to_owned());
        (access, refresh)
    }
}

fn client_ok(provider: &str, form: &HashMap<String, String>) -> bool {
    let secret = form.get("client_secret").map(String::as_str);
    match provider {
        // Dropbox works as a public PKCE client; a secret, if sent, must be right.
        "dropbox" => secret.is_none_or(|s| s == client_secret()),
        _ => secret == Some(client_secret()),
    }
}

/// A provider call's form, recorded and let through the double's mode (which may answer it
/// instead: the rejection).
struct Received(HashMap<String, String>);

impl FromRequest<Shared> for Received {
    type Rejection = Response;

    async fn from_request(request: Request, shared: &Shared) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .map_err(|_| StatusCode::BAD_REQUEST.into_response())?;
        shared.receive(&parts.headers, &body).await.map(Received)
    }
}

async fn token(
    State(shared): State<Shared>,
    Path(provider): Path<String>,
    Received(form): Received,
) -> Response {
    if !client_ok(&provider, &form) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let token_type = if provider == "dropbox" {
        "bearer"
    } else {
        "Bearer"
    };
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            let grant = shared.book.lock().unwrap().codes.remove(&code);
            let Some(grant) = grant else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if grant.provider != provider
                || Some(&grant.client_id) != form.get("client_id")
                || Some(&grant.redirect_uri) != form.get("redirect_uri")
                || challenge != grant.challenge
            {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let (access, refresh) = shared.issue_tokens(&provider);
            axum::Json(json!({"access_token": access, "refresh_token": refresh, "expires_in": 3599, "token_type": token_type}))
                .into_response()
        }
        Some("refresh_token") => {
            let refresh = form.get("refresh_token").cloned().unwrap_or_default();
            let known = {
                let book = shared.book.lock().unwrap();
                book.refresh_tokens.get(&refresh) == Some(&provider)
                    && !book.revoked.contains(&refresh)
            };
            if !known {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            let (access, _) = shared.issue_tokens(&provider);
            axum::Json(
                json!({"access_token": access, "expires_in": "3600", "token_type": token_type}),
            )
            .into_response()
        }
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
}

async fn revoke(
    State(shared): State<Shared>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    Received(form): Received,
) -> Response {
    let token = match provider.as_str() {
        "dropbox" => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned),
        _ => form.get("token").cloned(),
    };
    let mut book = shared.book.lock().unwrap();
    match token {
        Some(t) if book.refresh_tokens.contains_key(&t) || book.access_tokens.contains_key(&t) => {
            book.revoked.push(t);
            StatusCode::OK.into_response()
        }
        _ => oauth_error(StatusCode::BAD_REQUEST, "invalid_token"),
    }
}

impl ProviderDouble {
    pub async fn start() -> Self {
        let shared = Shared::default();
        let app = Router::new()
            .route("/{provider}/token", post(token))
            .route("/{provider}/revoke", post(revoke))
            .with_state(shared.clone());
        let addr = crate::serve_router(app).await;
        Self { addr, shared }
    }

    /// Environment pointing the backend's provider endpoints at this double, with credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        let base = format!("http://{}", self.addr);
        let mut env = Vec::new();
        for (provider, prefix) in [
            ("googledrive", "GOOGLE"),
            ("dropbox", "DROPBOX"),
            ("onedrive", "ONEDRIVE"),
        ] {
            let upper = provider.to_ascii_uppercase();
            env.push((
                format!("OAUTH_{upper}_AUTHORIZE_URL"),
                format!("https://consent.example/{provider}/authorize"),
            ));
            env.push((
                format!("OAUTH_{upper}_TOKEN_URL"),
                format!("{base}/{provider}/token"),
            ));
            if provider != "onedrive" {
                env.push((
                    format!("OAUTH_{upper}_REVOKE_URL"),
                    format!("{base}/{provider}/revoke"),
                ));
            }
            env.push((
                format!("{prefix}_CLIENT_ID"),
                format!("{provider}-client-id"),
            ));
            if provider != "dropbox" {
                env.push((
                    format!("{prefix}_CLIENT_SECRET"),
                    client_secret().to_owned(),
                ));
            }
        }
        env.push((
            "GOOGLE_REDIRECT_URI".into(),
            "https://api.example/oauth/callback/googledrive".into(),
        ));
        env.push((
            "ONEDRIVE_REDIRECT_URI".into(),
            "https://api.example/oauth/callback/onedrive".into(),
        ));
        env.push((
            "ENABLED_CLOUD_PROVIDERS".into(),
            "googledrive,dropbox,onedrive".into(),
        ));
        env.push((
            "ALLOWED_REDIRECT_URIS".into(),
            "apuntador://,https://app.example/callback".into(),
        ));
        env
    }

    /// The user consents: what the provider's authorization page would do with the parameters
    /// of `authorization_url`. Returns the code it would redirect with.
    pub fn consent(&self, authorization_url: &str) -> String {
        let url = url::Url::parse(authorization_url).expect("authorization URL");
        let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(
            params.get("response_type").map(String::as_str),
            Some("code")
        );
        assert_eq!(
            params.get("code_challenge_method").map(String::as_str),
            Some("S256")
        );
        let provider = url.path_segments().unwrap().next().unwrap().to_owned();
        let n = self.shared.counter.fetch_add(1, Ordering::SeqCst);
        let code = format!("code-{provider}-{n}");
        self.shared.book.lock().unwrap().codes.insert(
            code.clone(),
            Grant {
                provider,
                client_id: params["client_id"].clone(),
                redirect_uri: params["redirect_uri"].clone(),
                challenge: params["code_challenge"].clone(),
            },
        );
        code
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn trace_headers(&self) -> Vec<String> {
        self.shared.book.lock().unwrap().trace_headers.clone()
    }

    pub fn revoked(&self) -> Vec<String> {
        self.shared.book.lock().unwrap().revoked.clone()
    }

    pub fn forms(&self) -> Vec<HashMap<String, String>> {
        self.shared.book.lock().unwrap().forms.clone()
    }
}
