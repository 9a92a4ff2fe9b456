//! The OpenAPI 3.1 document at `/api/v1/openapi.json`, generated from the
//! route table (`routes::table`): every `/api/` route with its method,
//! summary, minimum role, path parameters, and the request and response
//! schemas derived (`utoipa::ToSchema`) from the handlers' own types. It is
//! never written by hand, so it cannot drift from the router.

use std::sync::OnceLock;

use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ComponentsBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Required};

use crate::routes::{Access, table};

fn method_of(m: &Method) -> Option<HttpMethod> {
    Some(match *m {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        _ => return None,
    })
}

/// The agents' older error shape (`POST /api/v1/enroll` only).
fn agent_error_response(description: &str) -> utoipa::openapi::Response {
    let schema = ObjectBuilder::new()
        .property("code", ObjectBuilder::new().schema_type(Type::String))
        .property("message", ObjectBuilder::new().schema_type(Type::String))
        .required("code")
        .required("message");
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    let schema = ObjectBuilder::new()
        .property(
            "error",
            ObjectBuilder::new()
                .property("code", ObjectBuilder::new().schema_type(Type::String))
                .property("message", ObjectBuilder::new().schema_type(Type::String))
                .property("field", ObjectBuilder::new().schema_type(Type::String))
                .required("code")
                .required("message"),
        )
        .required("error");
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

/// Builds the document.
pub fn build() -> OpenApi {
    let mut schemas = Vec::new();
    let mut paths = PathsBuilder::new();
    for r in table().into_iter().filter(|r| r.path.starts_with("/api/")) {
        let Some(method) = method_of(&r.method) else {
            continue;
        };
        let role = match r.access {
            Access::Public => "public".to_owned(),
            Access::Min(role) => format!("minimum role: {role}"),
        };
        let tag = r
            .path
            .trim_start_matches("/api/v1/")
            .split('/')
            .next()
            .unwrap_or("api")
            .to_owned();
        let mut op = OperationBuilder::new()
            .summary(Some(if r.summary.is_empty() {
                r.path
            } else {
                r.summary
            }))
            .description(Some(role))
            .operation_id(Some(format!(
                "{}_{}",
                r.method.as_str().to_lowercase(),
                r.path
                    .trim_start_matches("/api/v1/")
                    .replace(['/', '{', '}', '.'], "_")
            )))
            .tag(tag);
        for seg in r.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
                );
            }
        }
        for (name, required) in r.query {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Query)
                    .required(if *required {
                        Required::True
                    } else {
                        Required::False
                    })
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if let Some(body) = r.body {
            let schema = body(&mut schemas);
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(schema)).build(),
                    )
                    .build(),
            ));
        }
        let ok = match r.returns {
            Some((status, Some(schema_fn))) => {
                let schema = schema_fn(&mut schemas);
                (
                    status,
                    ResponseBuilder::new()
                        .description("success")
                        .content(
                            "application/json",
                            ContentBuilder::new().schema(Some(schema)).build(),
                        )
                        .build(),
                )
            }
            Some((status, None)) => (
                status,
                ResponseBuilder::new().description("success").build(),
            ),
            None => (200, ResponseBuilder::new().description("success").build()),
        };
        op = op.response(ok.0.to_string(), ok.1);
        if r.path == "/api/v1/enroll" {
            for (code, what) in [
                ("400", "malformed request"),
                ("403", "token invalid, expired or used"),
                ("404", "unknown host"),
                ("409", "conflict"),
                ("502", "bad answer from the control plane"),
                ("503", "the control plane is not answering"),
            ] {
                op = op.response(code, agent_error_response(what));
            }
        } else {
            let mut errors = vec![
                ("400", "invalid input (the error names the field)"),
                ("404", "unknown id"),
                ("409", "conflict with the current state"),
                ("502", "a bad answer from the owning role"),
                ("503", "the owning role or the database is not answering"),
            ];
            if matches!(r.access, Access::Min(_)) {
                errors.push(("401", "not signed in, or a bad token"));
                errors.push((
                    "403",
                    "role too low, refused by the owner, or a CSRF/origin refusal",
                ));
            }
            if r.body.is_some() {
                errors.push(("413", "body over 1 MiB"));
                errors.push(("415", "the body is not application/json"));
            }
            for (code, what) in errors {
                op = op.response(code, error_response(what));
            }
        }
        paths = paths.path(r.path, utoipa::openapi::PathItem::new(method, op.build()));
    }
    let mut components = ComponentsBuilder::new()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("an API token, `rmt_...`"))
                    .build(),
            ),
        )
        .security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::session::COOKIE,
                "a login session; state-changing requests also need X-CSRF-Token",
            ))),
        );
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("restic-manager")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Operate restic backups across a fleet. See docs/api.md.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn document() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| build().to_json().unwrap_or_else(|_| "{}".to_owned()));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json.clone(),
    )
        .into_response()
}

/// `GET /api/docs`: a small reference page of the API, from the same table
/// (plain HTML, no script).
pub(crate) async fn reference() -> axum::response::Html<String> {
    use crate::pages::escape;
    let mut rows = String::new();
    for r in table().into_iter().filter(|r| r.path.starts_with("/api/")) {
        let who = match r.access {
            Access::Public => "public".to_owned(),
            Access::Min(role) => role.to_string(),
        };
        rows.push_str(&format!(
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>\n",
            escape(r.method.as_str()),
            escape(r.path),
            escape(&who),
            escape(r.summary)
        ));
    }
    axum::response::Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>restic-manager API</title></head>\
         <body><h1>restic-manager API v1</h1><p>The machine-readable document is \
         <a href=\"/api/v1/openapi.json\">/api/v1/openapi.json</a> (OpenAPI 3.1). Authenticate with \
         <code>Authorization: Bearer rmt_...</code> or a session (plus <code>X-CSRF-Token</code> on changes).</p>\
         <table><thead><tr><th>method</th><th>path</th><th>minimum role</th><th>what</th></tr></thead>\
         <tbody>{rows}</tbody></table></body></html>"
    ))
}
