//! The HTTP side of `rightsizer serve`: the routers in process, and the binary over real
//! TLS on loopback.

#[path = "../support/exe.rs"]
mod exe;
#[path = "../support_https/mod.rs"]
mod support_https;

mod attacks;
mod https_e2e;
mod server_router;
