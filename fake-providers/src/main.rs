//! `cargo xtask fake-providers`: the fakes on fixed loopback ports until Ctrl-C.
//!
//! Flags: `--smartlead ADDR` (127.0.0.1:9801), `--heyreach ADDR` (127.0.0.1:9802),
//! `--openai ADDR` (127.0.0.1:9803), `--smartlead-key KEY`, `--heyreach-key KEY`,
//! `--openai-key KEY`, `--smartlead-webhook-secret SECRET`.

use fake_providers::{FakeChat, FakeHeyreach, FakeSmartlead};

const USAGE: &str = "usage: fake-providers [--smartlead ADDR] [--heyreach ADDR] [--openai ADDR] [--smartlead-key KEY] [--heyreach-key KEY] [--openai-key KEY] [--smartlead-webhook-secret SECRET]";

#[tokio::main]
async fn main() {
    let mut opts = [
        ("--smartlead", "127.0.0.1:9801".to_string()),
        ("--heyreach", "127.0.0.1:9802".to_string()),
        ("--smartlead-key", "fake-smartlead-key".to_string()),
        ("--heyreach-key", "fake-heyreach-key".to_string()),
        ("--smartlead-webhook-secret", String::new()),
        ("--openai", "127.0.0.1:9803".to_string()),
        ("--openai-key", "fake-openai-key".to_string()),
    ];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (opts.iter_mut().find(|(name, _)| *name == flag), args.next()) {
            (Some((_, value)), Some(v)) => *value = v,
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let [(_, sl_addr), (_, hr_addr), (_, sl_key), (_, hr_key), (_, sl_secret), (_, ai_addr), (_, ai_key)] = opts;
    let fail = |e: fake_providers::Error| -> ! {
        eprintln!("fake-providers: {e}");
        std::process::exit(1)
    };
    let sl = FakeSmartlead::start_on(&sl_addr, &sl_key).await.unwrap_or_else(|e| fail(e));
    let hr = FakeHeyreach::start_on(&hr_addr, &hr_key).await.unwrap_or_else(|e| fail(e));
    let ai = FakeChat::start_on(&ai_addr, &ai_key).await.unwrap_or_else(|e| fail(e));
    if !sl_secret.is_empty() {
        sl.set_webhook_secret(Some(&sl_secret));
    }
    println!("fake Smartlead  {}  api key {}", sl.base_url(), sl.api_key());
    println!("fake HeyReach   {}  api key {}", hr.base_url(), hr.api_key());
    println!("fake OpenAI     {}  api key {}   (chat completions: the optimizer's model)", ai.base_url(), ai.api_key());
    println!("state:          curl -s http://{}/_fake/state    (and http://{}/_fake/state)", sl.addr(), hr.addr());
    println!("send a reply:   curl -s -XPOST http://{}/_fake/send-reply -d '{{\"secret\": \"<smartlead webhook secret>\"}}'", sl.addr());
    println!("                curl -s -XPOST http://{}/_fake/send-reply -d '{{}}'", hr.addr());
    println!("(to every webhook registered at the fake; add \"url\": \"http://…/v1/webhooks/…\" to send elsewhere)");
    println!("model down:     curl -s -XPOST http://{}/_fake/fail -d '{{\"n\": 1, \"status\": 503}}'", ai.addr());
    let _ = tokio::signal::ctrl_c().await;
}
