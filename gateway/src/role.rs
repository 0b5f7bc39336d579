//! Who is acting: a caller's [`Role`] (from their credential), or the gateway itself
//! ([`Actor::System`], for work no caller asked for: webhook ingress, job bookkeeping).
//!
//! Knows nothing of policies, the database or HTTP; they all speak these types.

use serde::Deserialize;

/// A caller's role, as far as route access goes (and what tokens and users store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
    SuperAdmin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::SuperAdmin => "super_admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "super_admin" => Some(Role::SuperAdmin),
            _ => None,
        }
    }
}

/// Who a tenant transaction acts for; the database sees it as `app.role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A caller with this role (native routes, plugin invocations for a request).
    Caller(Role),
    /// The gateway itself: work that no caller's role should colour.
    System,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Caller(r) => r.as_str(),
            Actor::System => "system",
        }
    }
}

impl From<Role> for Actor {
    fn from(r: Role) -> Actor {
        Actor::Caller(r)
    }
}
