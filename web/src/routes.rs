//! The route table: every route with its method, path and minimum role (or
//! public), in one place. The router is built only from it ([`app`]): each
//! entry's minimum role is enforced by `auth::guard` before its handler
//! runs, and the authorization-matrix test walks the same table. To add a
//! route (UI pages included), add an entry to [`table`]; nothing else
//! registers routes.
//!
//! Unknown paths answer 404 and wrong methods 405, as JSON under `/api/`.

use axum::Router;
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::auth::{self, Role};
use crate::error::ApiError;
use crate::{AppState, enroll, health, pages, ui};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Signed in with at least this role.
    Min(Role),
}

/// One entry of the table.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({:?})", self.method, self.path, self.access)
    }
}

/// An entry: `handler` answers `method` on `path` for `access`.
pub fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    Route {
        method,
        path,
        access,
        handler: on(filter, handler),
    }
}

const PUBLIC: Access = Access::Public;
const VIEWER: Access = Access::Min(Role::Viewer);
const OPERATOR: Access = Access::Min(Role::Operator);

/// Every route.
pub fn table() -> Vec<Route> {
    vec![
        route(Method::GET, "/healthz", PUBLIC, health::healthz),
        route(Method::GET, "/readyz", PUBLIC, health::readyz),
        route(Method::GET, "/login", PUBLIC, pages::login_form),
        route(Method::POST, "/login", PUBLIC, pages::login),
        route(Method::POST, "/logout", VIEWER, pages::logout),
        route(Method::GET, "/setup", PUBLIC, pages::setup_form),
        route(Method::POST, "/setup", PUBLIC, pages::setup),
        route(Method::GET, "/static/app.css", PUBLIC, ui::assets::css),
        route(Method::GET, "/static/app.js", PUBLIC, ui::assets::js),
        route(Method::GET, "/", VIEWER, ui::dashboard::page),
        route(
            Method::GET,
            "/hosts/new",
            OPERATOR,
            ui::actions::add_host_form,
        ),
        route(Method::POST, "/hosts/new", OPERATOR, ui::actions::add_host),
        route(Method::GET, "/hosts/{id}", VIEWER, ui::pages::host_page),
        route(
            Method::GET,
            "/hosts/{id}/run",
            OPERATOR,
            ui::actions::run_form,
        ),
        route(
            Method::POST,
            "/hosts/{id}/run",
            OPERATOR,
            ui::actions::run_submit,
        ),
        route(
            Method::POST,
            "/hosts/{id}/revoke",
            OPERATOR,
            ui::actions::revoke,
        ),
        route(
            Method::POST,
            "/jobs/{id}/cancel",
            OPERATOR,
            ui::actions::cancel,
        ),
        route(Method::GET, "/jobs", VIEWER, ui::pages::jobs_page),
        route(Method::GET, "/jobs/{id}", VIEWER, ui::pages::job_page),
        route(Method::GET, "/api/v1/events", VIEWER, crate::events::stream),
        route(
            Method::GET,
            "/api/v1/hosts",
            VIEWER,
            ui::dashboard::api_list,
        ),
        route(
            Method::GET,
            "/api/v1/hosts/{id}",
            VIEWER,
            ui::pages::host_api,
        ),
        route(Method::GET, "/api/v1/jobs", VIEWER, ui::pages::jobs_api),
        route(Method::GET, "/api/v1/jobs/{id}", VIEWER, ui::pages::job_api),
        route(Method::POST, "/api/v1/enroll", PUBLIC, enroll::enroll),
        route(Method::GET, "/api/v1/me", VIEWER, crate::me),
    ]
}

/// The router: every entry of [`table`] behind its guard, authentication
/// and CSRF, and the HTTP hygiene layers.
pub fn app(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for r in table() {
        let handler = match r.access {
            Access::Public => r.handler,
            Access::Min(min) => {
                r.handler
                    .route_layer(axum::middleware::from_fn(move |req, next| {
                        auth::guard(min, req, next)
                    }))
            }
        };
        router = router.route(r.path, handler);
    }
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state);
    crate::layers::apply(router)
}

/// Marks answers of the router itself (no route, wrong method), so tests
/// can tell them from a handler's own 404 ("no such host").
pub const NO_ROUTE_HEADER: &str = "x-rm-no-route";

fn no_route(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(NO_ROUTE_HEADER, axum::http::HeaderValue::from_static("1"));
    resp
}

async fn not_found(uri: axum::http::Uri) -> Response {
    no_route(if uri.path().starts_with("/api/") {
        ApiError::not_found(format!("no such route: {}", uri.path())).into_response()
    } else {
        auth::page(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
    })
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    no_route(if uri.path().starts_with("/api/") {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {}", uri.path()),
        )
        .into_response()
    } else {
        auth::page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "This page does not accept that method.",
        )
    })
}
