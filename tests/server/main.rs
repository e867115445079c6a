//! The HTTP side of `rightsizer serve`: the routers in process, the binary over real
//! TLS on loopback, and the admin port's savings report in a real browser.

#[path = "../support/exe.rs"]
mod exe;
#[path = "../support/png.rs"]
mod png;
#[path = "../support/prometheus.rs"]
mod prometheus;
#[path = "../support/scenario.rs"]
mod scenario;
#[path = "../support_https/mod.rs"]
mod support_https;

mod attacks;
mod https_e2e;
mod report_browser;
mod report_route;
mod server_router;
mod shutdown_h1;
