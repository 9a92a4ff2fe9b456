//! An in-process web role on a real store and a test bus, driven with
//! `oneshot`, with a clock the tests move.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, header};
use http_body_util::BodyExt;
use rm_bus::clock::ManualClock;
use rm_bus::creds::Role as BusRole;
use rm_testkit::TestBus;
use rm_web::auth::{AuthSettings, Role};
use rm_web::state::Shared;
use rm_web::{AppState, routes};
use tower::ServiceExt;

/// The host tests address the server by, and its origin.
pub const HOST: &str = "rm.test";
pub const ORIGIN: &str = "https://rm.test";
/// Start of the manual clock.
pub const T0: i64 = 1_800_000_000_000;

pub struct H {
    pub bus: TestBus,
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub app: Router,
    pub clock: Arc<ManualClock>,
    /// Dropping these stops what the test started.
    pub stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

impl Session {
    pub fn header(&self) -> String {
        format!("__Host-rm_session={}", self.cookie)
    }
}

pub fn password_of(name: &str) -> String {
    format!("{name}-secret-password")
}

impl H {
    pub async fn new() -> Self {
        Self::with(AuthSettings::default()).await
    }

    pub async fn with(auth: AuthSettings) -> Self {
        let bus = TestBus::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = rm_store::Store::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        let web = bus.connect_role(BusRole::Web).await.unwrap();
        // live events on a connection of their own, as `rm_web::run` has them
        let live = bus.connect_role(BusRole::Web).await.unwrap();
        let clock = ManualClock::new(T0);
        let state = AppState::new(Shared {
            store,
            bus: web.client.clone(),
            live_bus: live.client.clone(),
            // no owning role runs here: fail fast
            svc_timeout: Duration::from_millis(300),
            clock: clock.clone(),
            auth,
            setup: Default::default(),
            events: Default::default(),
            http: Default::default(),
            listings: Default::default(),
            downloads: Default::default(),
            recovery: Default::default(),
            touches: Default::default(),
        });
        let app = routes::app(state.clone());
        Self {
            bus,
            dir,
            state,
            app,
            clock,
            stops: Vec::new(),
        }
    }

    /// Runs the real control plane on this bus and database until `H` drops.
    pub async fn with_controlplane(&mut self) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = rm_controlplane::Config {
            data_dir: self.dir.path().join("cp"),
            db_path: Some(self.dir.path().join("db.sqlite")),
            bus_urls: vec![self.bus.url()],
            agent_bus_urls: vec![self.bus.url()],
            authority: self.bus.authority().clone(),
            server_url: "https://127.0.0.1:8443".into(),
            server_fingerprint: None,
            timings: rm_controlplane::Timings::default(),
            clock: rm_bus::clock::system(),
        };
        tokio::spawn(rm_controlplane::run(config, async move {
            let _ = rx.await;
        }));
        self.stops.push(tx);
        // the control plane answers once its services are subscribed
        for _ in 0..200 {
            let r: Result<rm_controlplane::api::PubKey, _> = rm_web::svc::call(
                &self.state.bus,
                rm_bus::subject::SvcRole::Controlplane,
                rm_controlplane::api::PUBKEY,
                rm_bus::msg::Actor {
                    name: "test".into(),
                    via: rm_bus::msg::ActorVia::System,
                    address: None,
                },
                serde_json::json!({}),
                Duration::from_secs(1),
            )
            .await;
            if r.is_ok() {
                return;
            }
        }
        panic!("the control plane did not come up");
    }

    /// Runs the real alerts role on this bus and database until `H` drops.
    pub async fn with_alerts(&mut self) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let role = BusRole::Alerts;
        let creds = self.bus.creds_for(&role).unwrap();
        let mut connect = self.bus.spec(&role, creds);
        connect.retry_on_initial_connect = true;
        let config = rm_alerts::Config {
            data_dir: self.dir.path().join("alerts"),
            db_path: Some(self.dir.path().join("db.sqlite")),
            connect,
            notifier_xkey: nkeys::XKey::new().public_key(),
            ui_base_url: None,
            timings: rm_alerts::Timings::default(),
            anomaly: Default::default(),
            clock: rm_bus::clock::system(),
        };
        tokio::spawn(rm_alerts::run(config, async move {
            let _ = rx.await;
        }));
        self.stops.push(tx);
        for _ in 0..200 {
            let r: Result<rm_alerts::api::PubKey, _> = rm_web::svc::call(
                &self.state.bus,
                rm_bus::subject::SvcRole::Alerts,
                rm_alerts::api::PUBKEY,
                rm_bus::msg::Actor {
                    name: "test".into(),
                    via: rm_bus::msg::ActorVia::System,
                    address: None,
                },
                serde_json::json!({}),
                Duration::from_secs(1),
            )
            .await;
            if r.is_ok() {
                return;
            }
        }
        panic!("the alerts role did not come up");
    }

    /// A bearer token of a fresh account with `role`.
    pub async fn token(&self, role: Role) -> String {
        let id = self.user(&format!("tok-{}", role.as_str()), role).await;
        rm_web::auth::token::create(&self.state, &id, "test", role, None)
            .await
            .unwrap()
            .secret
    }

    /// A JSON API call with a bearer token.
    pub async fn api(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut r = req(method, path).header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(b) => {
                r = r.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = self.send(r.body(body).unwrap()).await;
        let status = resp.status().as_u16();
        let t = text(resp).await;
        (
            status,
            serde_json::from_str(&t).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A GET with a bearer token whose answer is text (a page, `/metrics`).
    pub async fn get_text(&self, token: &str, path: &str) -> (u16, String) {
        let r = req("GET", path).header(header::AUTHORIZATION, format!("Bearer {token}"));
        let resp = self.send(r.body(Body::empty()).unwrap()).await;
        (resp.status().as_u16(), text(resp).await)
    }

    pub async fn send(&self, req: Request<Body>) -> Response<Body> {
        self.app.clone().oneshot(req).await.unwrap()
    }

    /// Creates an account named `name` with `role`.
    pub async fn user(&self, name: &str, role: Role) -> String {
        rm_web::auth::accounts::add(
            &self.state.store,
            self.state.now(),
            name,
            role,
            &password_of(name),
            false,
        )
        .await
        .unwrap()
    }

    /// POSTs the login form; returns the response.
    pub async fn try_login(&self, name: &str, password: &str) -> Response<Body> {
        self.try_login_with(name, password, None).await
    }

    pub async fn try_login_with(
        &self,
        name: &str,
        password: &str,
        old: Option<&Session>,
    ) -> Response<Body> {
        let mut body = format!("username={name}&password={password}&next=/");
        let mut r = form(req("POST", "/login"), &body);
        if let Some(old) = old {
            // the login page of a signed-in browser carries its CSRF token
            body.push_str(&format!("&_csrf={}", old.csrf));
            r = r.header(header::COOKIE, old.header());
        }
        self.send(r.body(Body::from(body)).unwrap()).await
    }

    /// Logs `name` in; its session.
    pub async fn login(&self, name: &str) -> Session {
        let resp = self.try_login(name, &password_of(name)).await;
        assert_eq!(resp.status(), 303, "login of {name}");
        let cookie = session_cookie(&resp).expect("a session cookie");
        self.session_of(cookie).await
    }

    /// The session behind a cookie value (its CSRF token from /api/v1/me).
    pub async fn session_of(&self, cookie: String) -> Session {
        let resp = self
            .send(
                req("GET", "/api/v1/me")
                    .header(header::COOKIE, format!("__Host-rm_session={cookie}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(resp.status(), 200);
        let me: serde_json::Value = json(resp).await;
        Session {
            cookie,
            csrf: me["csrf"].as_str().unwrap().to_owned(),
        }
    }

    /// GET /api/v1/me with a session: its status, once the session's
    /// last-use mark (written off the request path) is in.
    pub async fn me_status(&self, s: &Session) -> u16 {
        let status = self
            .send(
                req("GET", "/api/v1/me")
                    .header(header::COOKIE, s.header())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .status()
            .as_u16();
        self.state.touches.idle().await;
        status
    }

    pub async fn user_count(&self) -> i64 {
        let mut c = self.state.store.read().await.unwrap();
        rm_store::users::count(&mut c).await.unwrap()
    }
}

/// A request to this server (Host set).
pub fn req(method: &str, path: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST)
}

/// A same-origin form post.
pub fn form(b: axum::http::request::Builder, _body: &str) -> axum::http::request::Builder {
    b.header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
}

/// The session cookie a response sets, if any.
pub fn session_cookie(resp: &Response<Body>) -> Option<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("__Host-rm_session="))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
        .filter(|v| !v.is_empty())
}

pub fn header_of(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

pub async fn text(resp: Response<Body>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub async fn json(resp: Response<Body>) -> serde_json::Value {
    let t = text(resp).await;
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
}
