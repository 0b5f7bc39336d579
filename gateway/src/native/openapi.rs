//! `GET /v1/openapi.json`: the OpenAPI document of the loaded policies (see [`crate::openapi`]).

use http::{HeaderValue, StatusCode};

use crate::error::ApiError;
use crate::phases::{Call, Reply};

pub async fn serve(call: Call<'_>) -> Result<Reply, ApiError> {
    Ok(Reply {
        status: StatusCode::OK,
        content_type: HeaderValue::from_static("application/json"),
        headers: Vec::new(),
        body: call.state.routing().openapi(),
    })
}
