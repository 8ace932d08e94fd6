//! The Kafka case. A Kafka client connects to the bootstrap address, then
//! to the address each broker *advertises* in its metadata; with the shared
//! broker that is the broker itself, and a proxy on the bootstrap address
//! only would see the first request. So this case runs a broker of its own
//! (`scripts/services/kafka.sh` with its own services folder and ports,
//! under the test target's temporary folder) that advertises the proxy's
//! port: every connection of the sink, bootstrap and produce alike, goes
//! through the proxy. The broker is stopped at the end.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::{free_port, service_env};
use serde_json::json;

use super::{datagen_case, kafka_ids};
use crate::faults::driver::Case;
use crate::support::unique_suffix;

/// The environment of this case's own broker.
fn broker_env(dir: &str, port: u16, cport: u16, advertised: u16) -> Vec<(String, String)> {
    vec![
        ("DELTAFORGE_SERVICES_DIR".into(), dir.into()),
        ("DF_KAFKA_PORT".into(), port.to_string()),
        ("DF_KAFKA_CONTROLLER_PORT".into(), cport.to_string()),
        ("DF_KAFKA_ADVERTISED_PORT".into(), advertised.to_string()),
    ]
}

/// Starts the case's broker behind a blackholing proxy it advertises.
pub fn case() -> Case {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fault-kafka");
    let dir = dir.to_str().expect("UTF-8 path").to_string();
    let (port, cport, advertised) = (free_port(), free_port(), free_port());
    let env = broker_env(&dir, port, cport, advertised);
    // A broker left running by an interrupted run advertises another port.
    service_env("kafka", "stop", &env);
    service_env("kafka", "start", &env);
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let proxy = FaultProxy::start_on(format!("127.0.0.1:{advertised}").parse().expect("address"), target);
    proxy.set(Fault::Blackhole);
    let brokers = format!("127.0.0.1:{advertised}");
    let prefix = format!("flt-{}", unique_suffix());
    let config = json!({ "brokers": brokers, "topic": format!("{prefix}.${{table}}") });
    let read = Box::new(move || {
        let topics = [format!("{prefix}.orders"), format!("{prefix}.items")];
        let ids = kafka_ids(&brokers, &[&topics[0], &topics[1]]);
        service_env("kafka", "stop", &env);
        ids
    });
    let mut case = datagen_case("kafka", proxy, "kafka", config, read);
    // librdkafka resends the produce requests in flight on a new connection
    // (idempotent producer): a reset fails no delivery, it is only logged.
    case.reset_in_log = Some("connection reset by peer");
    case
}
