//! Route handlers, one module per resource.

pub mod admin;
pub mod feed;
pub mod offers;
pub mod products;
pub mod status;
