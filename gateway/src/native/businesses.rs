//! Businesses inside an org, with an owner and team members (seed 001).

use http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use serde::Deserialize;

use super::{parse, uuid_param};
use crate::db;
use crate::error::{violated_constraint, ApiError, Error};
use crate::phases::{Call, Reply};
use crate::role::Role;

#[derive(Deserialize)]
struct CreateBusiness {
    name: String,
}

/// `POST /v1/businesses {"name"}` → 201 `{"business_id"}`; the caller becomes the owner.
pub async fn create(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = call.caller.org.ok_or_else(ApiError::not_found)?;
    let CreateBusiness { name } = parse(&call)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
    }
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    let id = db::businesses::create(&mut tx, name, call.caller.user).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org, business_id = %id, "business_created");
    Ok(Reply::json(StatusCode::CREATED, json!({ "business_id": id, "owner_id": call.caller.user })))
}

#[derive(Deserialize)]
struct AddMember {
    user_id: String,
}

/// `POST /v1/businesses/{id}/members {"user_id"}` → 201; owner or org admin only.
pub async fn add_member(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = call.caller.org.ok_or_else(ApiError::not_found)?;
    let business = uuid_param(&call, "id")?;
    let AddMember { user_id } = parse(&call)?;
    let user = Uuid::parse_str(&user_id).map_err(|_| ApiError::invalid("user_id", "must be a UUID"))?;
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    let owner = db::businesses::owner_of(&mut tx, business).await?.ok_or_else(ApiError::not_found)?;
    let may = match call.caller.role {
        Role::Admin | Role::SuperAdmin => true,
        Role::Member => owner.is_some() && owner == call.caller.user,
    };
    if !may {
        return Err(ApiError::forbidden("only the business owner or an org admin may add members"));
    }
    if !db::users::exists(&mut tx, user).await? {
        return Err(ApiError::invalid("user_id", "no such user in this org"));
    }
    let added = db::businesses::add_member(&mut tx, business, user).await.map_err(|e| match &e {
        Error::Db(d) if violated_constraint(d).is_some() => ApiError::invalid("user_id", "cannot be added"),
        _ => ApiError::from(e),
    })?;
    tx.commit().await?;
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok(Reply::json(status, json!({ "business_id": business, "user_id": user, "added": added })))
}
