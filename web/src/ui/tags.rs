//! The host page's tags form (`POST /hosts/{id}/tags`): the same service
//! call as `PUT /api/v1/hosts/{id}/tags` (`api::hosts::save_tags`). A
//! refused list is shown again in the form with the reason, as typed.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::AppState;
use crate::auth::RequireOperator;
use crate::ui::pages::host_page_with;

#[derive(Debug, Deserialize)]
pub struct TagsForm {
    /// Comma-separated.
    #[serde(default)]
    pub tags: String,
}

/// `POST /hosts/{id}/tags`.
pub async fn save(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(form): Form<TagsForm>,
) -> Response {
    let tags = match rm_store::tags::parse_list(&form.tags) {
        Ok(t) => t,
        Err(m) => {
            return host_page_with(&state, &who, &id, Some((form.tags, m)), Default::default())
                .await;
        }
    };
    match crate::api::hosts::save_tags(&state, &who, id.clone(), tags).await {
        Ok(_) => Redirect::to(&format!("/hosts/{id}#tags")).into_response(),
        Err(e) if e.status.as_u16() == 400 || e.status.as_u16() == 409 => {
            host_page_with(
                &state,
                &who,
                &id,
                Some((form.tags, e.message)),
                Default::default(),
            )
            .await
        }
        Err(e) => crate::ui::error_page(&who, "hosts", &e),
    }
}
