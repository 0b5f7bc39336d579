//! Dispatch benchmark: instantiate + call of the `echo` plugin on a warm `InstancePre`, the
//! per-request cost the runtime adds, next to a naive per-request link + instantiate of the
//! same component, measured in one run. Run with `bench/dispatch.sh` (release build).
//!
//! Usage: dispatch_bench <echo.wasm> <policies dir> [iterations]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::db::structured::Schema;
use gateway::plugin::bindings::types::Request;
use gateway::plugin::{Invocation, Runtime};
use gateway::policy::PolicySet;
use gateway::role::Role;
use uuid::Uuid;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!("{name:<28} n={:<7} median={:>8.2?} p99={:>8.2?} min={:>8.2?}", samples.len(), p50, p99, samples[0]);
    (p50, p99)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let wasm = std::fs::read(&args[1])?;
    let policies = PolicySet::load(std::path::Path::new(&args[2]))?;
    let n: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let route = policies.routes.iter().find(|r| &*r.id == "echo").expect("echo route").clone();
    let runtime = Runtime::new(None, gateway::plugin::tls_config(None)?, gateway::plugin::host::addr::AddressPolicy::from_host()?)?;
    let plugin = runtime.load("echo", "bench", &wasm)?;
    // Never connected: echo makes no database calls.
    let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://nobody@127.0.0.1:1/none")?;
    let schema = Arc::new(Schema::default());
    let org = Uuid::new_v4();
    let body = br#"{"hello":"world","n":[1,2,3]}"#.to_vec();
    let request = || Request {
        method: "POST".into(),
        path: "/v1/echo".into(),
        params: vec![],
        query: String::new(),
        headers: vec![],
        body: body.clone(),
    };
    let run = |count: usize| {
        let runtime = runtime.clone();
        let route = route.clone();
        let pool = pool.clone();
        let schema = schema.clone();
        let plugin = &plugin;
        let request = &request;
        async move {
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let inv = Invocation {
                    label: &route.id,
                    grants: route.grants.clone(),
                    sandbox: route.sandbox,
                    pool: &pool,
                    schema: schema.clone(),
                    org,
                    user: None,
                    role: Role::Member,
                    request_id: "bench",
                    request: request(),
                    before_commit: None,
                    credentials: None,
                };
                let t = Instant::now();
                let reply = runtime.invoke(plugin, inv).await;
                samples.push(t.elapsed());
                assert!(matches!(reply, gateway::plugin::Outcome::Response(_)));
            }
            samples
        }
    };
    run(2_000).await; // warm-up
    let warm = run(n).await;

    // Naive: a fresh linker, link and instantiate per request (what the cached InstancePre saves).
    let engine = wasmtime::Engine::new(wasmtime::Config::new().epoch_interruption(false))?;
    let component = wasmtime::component::Component::new(&engine, &wasm)?;
    let mut naive = Vec::with_capacity(n / 10);
    for _ in 0..(n / 10).max(100) {
        let t = Instant::now();
        let mut linker = wasmtime::component::Linker::<gateway::plugin::state::StoreState>::new(&engine);
        gateway::plugin::host::add_to_linker(&mut linker)?;
        let pre = linker.instantiate_pre(&component)?;
        std::hint::black_box(&pre);
        naive.push(t.elapsed());
    }

    // Where an invocation's time goes.
    let mut phases: [Vec<Duration>; 4] = Default::default();
    let tls = gateway::plugin::tls_config(None)?;
    for _ in 0..(n / 4).max(1000) {
        let state = gateway::plugin::state::StoreState {
            wasi: wasmtime_wasi::WasiCtxBuilder::new().build(),
            table: wasmtime::component::ResourceTable::new(),
            limiter: gateway::plugin::state::MemoryLimiter::new(16 << 20),
            context: gateway::plugin::bindings::context::CallContext {
                org_id: org.to_string(), user_id: None, role: gateway::plugin::bindings::context::Role::Member,
                request_id: "bench".into(), route_id: "echo".into(), plugin_name: "echo".into(), plugin_version: "bench".into(),
            },
            db: gateway::plugin::state::DbState {
                pool: pool.clone(), schema: schema.clone(), grants: route.grants.clone(), tenant: org,
                actor: Role::Member.into(), tx: None, slots: runtime.db_slots.clone(), slot: None, aborted: false, statements: 0, refused: None,
            },
            http: gateway::plugin::state::HttpState {
                grants: route.grants.clone(), tls: tls.clone(), addresses: runtime.addresses.clone(), requests: 0,
                request_id: "bench".into(), org, plugin: "echo".into(), credentials: None, pacer: runtime.pacer.clone(),
            },
            log: gateway::plugin::state::LogState::new("bench".into(), org, "echo".into(), runtime.log_rate.clone()),
            cpu: Default::default(),
        };
        let t = runtime.phase_times(&plugin, state, &request()).await;
        for (i, d) in t.into_iter().enumerate() {
            phases[i].push(d);
        }
    }

    // Pieces of the invocation's set-up outside the phases above.
    let mut wasi_ctx = Vec::with_capacity(n / 4);
    for _ in 0..(n / 4).max(1000) {
        let t = Instant::now();
        let out = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(8192);
        let err = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(8192);
        let ctx = wasmtime_wasi::WasiCtxBuilder::new().allow_tcp(false).allow_udp(false).stdout(out.clone()).stderr(err.clone()).build();
        std::hint::black_box(&ctx);
        drop(ctx);
        std::hint::black_box((out.contents(), err.contents()));
        wasi_ctx.push(t.elapsed());
    }
    let mut wrap = Vec::with_capacity(n / 4);
    for _ in 0..(n / 4).max(1000) {
        let t = Instant::now();
        let meter = Arc::new(gateway::plugin::cpu::CpuMeter::default());
        let fut = gateway::plugin::cpu::Metered::new(async { std::hint::black_box(1) }, meter.clone());
        let placed = gateway::plugin::guest::place(tokio::time::timeout(Duration::from_secs(1), fut), meter);
        std::hint::black_box(placed.await.ok());
        wrap.push(t.elapsed());
    }

    println!("echo dispatch, {} iterations, 1 thread", n);
    report("  piece: WASI ctx build+drop", wasi_ctx);
    report("  piece: place+timeout+meter", wrap);
    let (p50, _) = report("warm InstancePre (invoke)", warm);
    let (naive50, _) = report("naive link (no instantiate)", naive);
    println!("ratio naive-link / warm invoke: {:.1}x", naive50.as_secs_f64() / p50.as_secs_f64());
    for (name, v) in ["  phase: new store", "  phase: instantiate", "  phase: call handle", "  phase: drop store"].iter().zip(phases) {
        report(name, v);
    }
    Ok(())
}
