#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

//! The upstream token vault through the core: consent at the provider, the
//! token injected, refreshed once for many requests, refusals and outages.

mod common;

use common::*;
use mcp_oauth_filter::flow::{Command, Next, Stage};
use serde_json::json;

const GH: &str = "http://127.0.0.1:10000/gh";

fn injected(done: Done) -> String {
    match done {
        Done::Forward(commands) => {
            // The browser session cookie never reaches the MCP server.
            assert!(
                commands.contains(&Command::RemoveRequestHeader("cookie")),
                "{commands:?}"
            );
            authorization_of(&commands)
        }
        Done::Reply(r) => panic!(
            "expected forwarding, got {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
    }
}

/// The upstream token a forwarded request carries.
fn authorization_of(commands: &[Command]) -> String {
    commands
        .iter()
        .find_map(|e| match e {
            Command::SetCredential("authorization", v) => {
                Some(v.expose().strip_prefix("Bearer ").unwrap().to_string())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no upstream token in {commands:?}"))
}

#[test]
fn consent_at_the_provider_then_the_token_is_injected() {
    let mut w = World::new(json!({}));
    let tokens = w.tokens_for(GH);
    let authorize = w.up.authorize_params.clone().unwrap();
    assert_eq!(
        query_param(&authorize, "client_id").as_deref(),
        Some("gh-client")
    );
    assert_eq!(
        query_param(&authorize, "scope").as_deref(),
        Some("read:user repo")
    );
    assert_eq!(
        query_param(&authorize, "prompt").as_deref(),
        Some("consent")
    );
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let te = tokens["access_token"].as_str().unwrap();
    assert_eq!(injected(w.mcp("/gh", te)), "ghu_1");
    // The client never sees the upstream token.
    assert!(!tokens.to_string().contains("ghu_") && !tokens.to_string().contains("ghr_"));
    // A route without upstream_oauth2 gets no Authorization at all.
    let plain = w.tokens_for("http://127.0.0.1:10000/mcp");
    match w.mcp("/mcp", plain["access_token"].as_str().unwrap()) {
        Done::Forward(e) => assert_eq!(e[0], Command::RemoveRequestHeader("authorization")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refreshed_across_several_expiries_with_rotation() {
    let mut w = World::new(json!({}));
    w.up.github = true;
    let tokens = w.tokens_for(GH);
    let te = tokens["access_token"].as_str().unwrap().to_string();
    for round in 1..=4 {
        // Within the skew (60 s) of expiry the token still works: it goes as
        // it is while a refresh runs beside the request.
        let sent = injected(w.mcp("/gh", &te));
        assert_eq!(sent, format!("ghu_{}", (round - 1).max(1)), "round {round}");
        // The next request gets the refreshed one.
        if round > 1 {
            assert_eq!(injected(w.mcp("/gh", &te)), w.up.current_token());
        }
        w.now += w.up.ttl - 30;
    }
    assert_eq!(w.up.refreshes(), 3);
}

#[test]
fn an_expired_token_waits_for_the_refresh_a_good_one_does_not() {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(GH);
    // Still good for 30 s, inside the 60 s skew: forwarded at once, and a refresh starts.
    w.now += w.up.ttl - 30;
    let first = w.start_mcp("/gh", &te);
    assert!(
        matches!(first.stage, Stage::Forwarded { .. }),
        "{:?}",
        first.stage
    );
    assert_eq!(authorization_of(&first.commands), "ghu_1");
    assert!(
        matches!(first.commands[0], Command::StartRefresh(_)),
        "the refresh is handed over before anything else can fail"
    );
    // While it runs, others go on with the current token and start no second one.
    for _ in 0..3 {
        let other = w.start_mcp("/gh", &te);
        assert!(matches!(other.stage, Stage::Forwarded { .. }));
        assert!(World::refresh_of(&other).is_none());
    }
    // Once expired, a request waits for the refresh in flight.
    w.now += 31;
    let waiter = w.start_mcp("/gh", &te);
    assert!(
        matches!(waiter.stage, Stage::Parked { .. }),
        "{:?}",
        waiter.stage
    );
    assert!(World::refresh_of(&waiter).is_none());
    let job = World::refresh_of(&first).unwrap();
    let answer = w.up.answer(&job.call, w.now);
    assert!(w.finish_refresh(job, &answer).is_none());
    let woken = w.wake(&waiter).expect("woken");
    assert_eq!(
        woken.commands[0],
        Command::SetCredential("authorization", "Bearer ghu_2".into())
    );
    assert_eq!(w.up.refreshes(), 1);
}

#[test]
fn concurrent_requests_share_one_refresh() {
    let mut w = World::new(json!({}));
    let tokens = w.tokens_for(GH);
    let te = tokens["access_token"].as_str().unwrap().to_string();
    w.now += w.up.ttl;
    let first = w.start_mcp("/gh", &te);
    assert!(
        matches!(first.stage, Stage::Parked { .. }),
        "{:?}",
        first.stage
    );
    let others: Vec<_> = (0..5).map(|_| w.start_mcp("/gh", &te)).collect();
    for o in &others {
        assert!(matches!(o.stage, Stage::Parked { .. }), "{:?}", o.stage);
        assert_eq!(o.next, Next::Stop);
        assert!(World::refresh_of(o).is_none(), "one refresh only");
        assert!(w.wake(o).is_none(), "nothing to wake for yet");
    }
    let done = w.answer_upstream(&first).expect("woken");
    assert!(matches!(done.stage, Stage::Forwarded { .. }));
    for o in &others {
        let woken = w.wake(o).expect("woken");
        assert_eq!(woken.next, Next::Continue);
        assert_eq!(
            woken.commands[0],
            Command::SetCredential("authorization", "Bearer ghu_2".into())
        );
    }
    assert_eq!(w.up.refreshes(), 1);
}

#[test]
fn a_waiter_gives_up_after_its_deadline_but_the_refresh_goes_on() {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(GH);
    w.now += w.up.ttl;
    let holder = w.start_mcp("/gh", &te);
    let waiter = w.start_mcp("/gh", &te);
    // refresh_wait_ms defaults to 5 s.
    w.now += 6;
    for step in [&holder, &waiter] {
        let r = w.wake(step).expect("timed out");
        match &r.commands[0] {
            Command::Reply(reply) => {
                assert_eq!(reply.status, 503);
                assert!(reply.header_value("retry-after").is_some());
            }
            other => panic!("{other:?}"),
        }
    }
    // The provider answers late, within the refresh's own timeout: its
    // rotated tokens are stored, and the next request just works.
    let job = World::refresh_of(&holder).unwrap();
    assert_eq!(job.call.timeout_ms, 30_000);
    let answer = w.up.answer(&job.call, w.now);
    w.finish_refresh(job, &answer);
    assert_eq!(injected(w.mcp("/gh", &te)), "ghu_2");
    assert_eq!(w.up.refreshes(), 1);
}

#[test]
fn a_refresh_whose_outcome_is_unknown_costs_nothing() {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(GH);
    w.now += w.up.ttl;
    let waiter = w.start_mcp("/gh", &te);
    let job = World::refresh_of(&waiter).unwrap();
    // No answer within the refresh timeout (Envoy reports it as no headers).
    w.finish_refresh(job, &mcp_oauth_filter::outbound::CallResponse::failed());
    let r = w.wake(&waiter).expect("told");
    let reply = match &r.commands[0] {
        Command::Reply(reply) => reply.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(reply.status, 503);
    assert!(String::from_utf8_lossy(&reply.body).contains("outcome is not known"));
    assert!(reply.header_value("retry-after").is_some());
    // The grant is kept; after the back-off the next refresh succeeds.
    w.now += 6;
    assert_eq!(injected(w.mcp("/gh", &te)), "ghu_2");
}

#[test]
fn tokens_in_use_are_refreshed_before_they_are_needed() {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(GH);
    let tick = |w: &mut World| {
        let sub = w.idp.user().to_string();
        w.core(|ctx| mcp_oauth_filter::flow::proactive_refresh(ctx, "gh", &sub))
    };
    assert_eq!(injected(w.mcp("/gh", &te)), "ghu_1");
    // Far from expiry: nothing to do.
    assert!(tick(&mut w).is_none());
    // It would enter the skew before the next tick: refreshed now.
    w.now += w.up.ttl - 60 - 29;
    let job = tick(&mut w).expect("a proactive refresh");
    assert!(tick(&mut w).is_none(), "the lock makes it one refresh");
    let answer = w.up.answer(&job.call, w.now);
    w.finish_refresh(job, &answer);
    w.now += 40;
    let step = w.start_mcp("/gh", &te);
    assert!(
        World::refresh_of(&step).is_none(),
        "no refresh on the request path"
    );
    assert_eq!(
        step.commands[0],
        Command::SetCredential("authorization", "Bearer ghu_2".into())
    );
}

#[test]
fn revoked_upstream_grant_restarts_consent() {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(GH);
    w.up.revoked = true;
    w.now += w.up.ttl;
    let r = w.mcp("/gh", &te).reply();
    assert_eq!(r.status, 401);
    assert!(
        r.header_value("www-authenticate")
            .unwrap()
            .contains("resource_metadata=")
    );
    // Authorizing again goes through the provider again and restores service.
    w.up.revoked = false;
    let te = w.access_token_for(GH);
    assert_eq!(injected(w.mcp("/gh", &te)), w.up.current_token());
}

#[test]
fn provider_down_is_a_clear_error_and_the_stale_token_is_never_sent() {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(GH);
    w.now += w.up.ttl;
    w.up.down = true;
    let r = w.mcp("/gh", &te).reply();
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("unavailable"));
    // Within the back-off, no new call.
    let calls = w.up.calls.len();
    assert_eq!(w.mcp("/gh", &te).reply().status, 503);
    assert_eq!(w.up.calls.len(), calls);
    // Back up: service resumes.
    w.up.down = false;
    w.now += 6;
    assert_eq!(injected(w.mcp("/gh", &te)), w.up.current_token());
}

#[test]
fn github_form_answers_and_errors() {
    let mut w = World::new(json!({}));
    w.up.github = true;
    let te = w.access_token_for(GH);
    assert_eq!(injected(w.mcp("/gh", &te)), "ghu_1");
    w.up.revoked = true;
    w.now += w.up.ttl;
    assert_eq!(w.mcp("/gh", &te).reply().status, 401);
}

#[test]
fn classic_tokens_never_expire() {
    let mut w = World::new(json!({}));
    w.up.classic = true;
    let te = w.access_token_for(GH);
    w.now += 3000;
    assert_eq!(injected(w.mcp("/gh", &te)), "ghu_1");
    assert_eq!(w.up.refreshes(), 0);
}

#[test]
fn a_refresh_without_a_new_refresh_token_keeps_the_old_one() {
    let mut w = World::new(json!({}));
    w.up.keep_refresh_token = true;
    let te = w.access_token_for(GH);
    for _ in 0..3 {
        w.now += w.up.ttl;
        assert_eq!(injected(w.mcp("/gh", &te)), w.up.current_token());
    }
    assert_eq!(w.up.refreshes(), 3);
}

#[test]
fn auto_auth_style_falls_back_to_body_credentials_and_remembers() {
    let mut w = World::new(json!({}));
    w.up.body_credentials_only = true;
    let te = w.access_token_for(GH);
    assert_eq!(injected(w.mcp("/gh", &te)), "ghu_1");
    let first_calls = w.up.calls.len();
    assert_eq!(first_calls, 2, "header, then body");
    w.now += w.up.ttl;
    assert_eq!(injected(w.mcp("/gh", &te)), "ghu_2");
    assert_eq!(
        w.up.calls.len(),
        first_calls + 1,
        "the body style was remembered"
    );
}

#[test]
fn user_refusing_at_the_provider_is_access_denied_for_the_client() {
    let mut w = World::new(json!({}));
    w.up.user_refuses = true;
    let client = w.public_client();
    let location = w.authorize(
        &client,
        "verifier-verifier-verifier-verifier-verifier-1",
        GH,
    );
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );
}

#[test]
fn mcp_server_refusing_the_token_restarts_consent() {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(GH);
    let step = w.start_mcp("/gh", &te);
    let effects = w.response_headers(&step.stage, 401, Some("Bearer"));
    assert_eq!(
        effects[0],
        Command::SetResponseHeader(":status", "401".into())
    );
    assert!(
        matches!(&effects[1], Command::SetResponseHeader("www-authenticate", v) if v.contains("resource_metadata"))
    );
    // The token is forgotten: the next request gets the challenge.
    assert_eq!(w.mcp("/gh", &te).reply().status, 401);
}

#[test]
fn a_late_refusal_does_not_delete_a_newer_token() {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(GH);
    w.now += w.up.ttl;
    let slow = w.start_mcp("/gh", &te);
    let slow_job = World::refresh_of(&slow).expect("a refresh");
    // The refresh outlives its lock (it can't with Envoy's timeouts, but say
    // it did): another request takes over and refreshes first.
    w.now += 71;
    let fast = w.start_mcp("/gh", &te);
    let done = w.answer_upstream(&fast).expect("woken");
    assert!(matches!(done.stage, Stage::Forwarded { .. }));
    // The slow refresh used the same (now rotated) refresh token: refused.
    let answer = w.up.answer(&slow_job.call, w.now);
    assert!(w.finish_refresh(slow_job, &answer).is_none());
    // The newer token survived.
    assert_eq!(injected(w.mcp("/gh", &te)), w.up.current_token());
}

#[test]
fn the_upstream_callback_belongs_to_the_browser_that_left() {
    let mut w = World::new(json!({}));
    w.up.stranger_first = true;
    let te = w.access_token_for(GH);
    // The stranger got a 403 and used nothing up: the user's own redirect worked.
    assert_eq!(w.up.stranger_status, Some(403));
    assert_eq!(injected(w.mcp("/gh", &te)), "ghu_1");
}

#[test]
fn a_refusal_of_the_old_token_keeps_the_one_a_refresh_just_stored() {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(GH);
    w.now += w.up.ttl - 30;
    // Sent with ghu_1 while a refresh runs beside it...
    let first = w.start_mcp("/gh", &te);
    assert_eq!(authorization_of(&first.commands), "ghu_1");
    let job = World::refresh_of(&first).unwrap();
    let answer = w.up.answer(&job.call, w.now);
    w.finish_refresh(job, &answer);
    // ...which stored ghu_2 before the MCP server answered 401 for ghu_1.
    let effects = w.response_headers(&first.stage, 401, None);
    assert!(!effects.is_empty(), "the client still gets the challenge");
    assert_eq!(injected(w.mcp("/gh", &te)), "ghu_2");
}

#[test]
fn upstream_tokens_never_print() {
    let mut w = World::new(json!({}));
    let te = w.access_token_for(GH);
    // Forwarded: the upstream token is in the commands, and not in their Debug.
    let Done::Forward(commands) = w.mcp("/gh", &te) else {
        panic!("forwarded");
    };
    assert_eq!(authorization_of(&commands), "ghu_1");
    let printed = format!("{commands:?} {:?}", w.last_stage);
    assert!(!printed.contains("ghu_1"), "{printed}");
    // Expired: the refresh job's call carries the refresh token in its body.
    w.now += w.up.ttl;
    let step = w.start_mcp("/gh", &te);
    let job = World::refresh_of(&step).expect("a refresh");
    assert!(String::from_utf8_lossy(&job.call.body).contains("ghr_"));
    let printed = format!("{step:?}");
    assert!(
        !printed.contains("ghr_") && !printed.contains("ghu_"),
        "{printed}"
    );
}
