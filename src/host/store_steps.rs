//! Runs core steps on the configured store. With shared data a step is
//! done at once; with etcd it may wait for calls, and the context that
//! started it hands each call's answer back with [`resume`] until it is
//! done. Either way the caller gets the step's result only once its
//! writes are stored (or known to have failed, which the step answered).

use std::cell::RefCell;

use super::calls;
use super::random::HostRandom;
use super::shared_data::{SharedData, run_step};
use crate::env::{Random, Replayed};
use crate::flow::{Ctx, Filter, Note};
use crate::outbound::CallResponse;
use crate::store::etcd::{Env, Op, Progress, Session, Settings};

thread_local! {
    /// This VM's etcd auth token and leases.
    static SESSION: RefCell<Session> = RefCell::new(Session::default());
}

/// A step, owning what it needs (it may outlive the callback that made it).
pub type StepFn<T> = Box<dyn FnMut(&mut Ctx<'_>) -> T>;

/// A step waiting for the answer to the call `token`.
pub struct Pending<T> {
    pub token: u32,
    op: Op<T>,
    step: StepFn<T>,
    drawn: Replayed,
}

pub enum Ran<T> {
    Done(T),
    Waiting(Pending<T>),
}

/// Forgets this VM's etcd token and leases (the configuration changed).
pub fn reset() {
    SESSION.with(|s| *s.borrow_mut() = Session::default());
}

/// Runs `step`. `fresh`: with etcd, read etcd itself, never this Envoy's cache.
pub fn start<T>(filter: &Filter, fresh: bool, mut step: StepFn<T>) -> Ran<T> {
    let Some(settings) = filter.etcd.as_ref() else {
        return Ran::Done(run_step(filter, |ctx| step(ctx)));
    };
    let mut op = Op::new(fresh);
    let mut drawn = Replayed::default();
    let mut notes = Vec::new();
    let progress = with_env(
        filter,
        settings,
        &mut step,
        &mut drawn,
        &mut notes,
        |env, run| op.drive(env, run),
    );
    carry(filter, settings, op, step, drawn, notes, progress)
}

/// The answer to a waiting step's call.
pub fn resume<T>(filter: &Filter, pending: Pending<T>, answer: &CallResponse) -> Ran<T> {
    let Pending {
        mut op,
        mut step,
        mut drawn,
        ..
    } = pending;
    let Some(settings) = filter.etcd.as_ref() else {
        return Ran::Done(run_step(filter, |ctx| step(ctx)));
    };
    let mut notes = Vec::new();
    let progress = with_env(
        filter,
        settings,
        &mut step,
        &mut drawn,
        &mut notes,
        |env, run| op.answer(env, run, answer),
    );
    carry(filter, settings, op, step, drawn, notes, progress)
}

/// Makes the call the step waits for; a call Envoy refuses outright is
/// answered as failed at once.
fn carry<T>(
    filter: &Filter,
    settings: &Settings,
    mut op: Op<T>,
    mut step: StepFn<T>,
    mut drawn: Replayed,
    mut notes: Vec<Note>,
    mut progress: Progress<T>,
) -> Ran<T> {
    loop {
        match progress {
            Progress::Done(out) => {
                // The lines of the run that counted; earlier runs' are dropped.
                super::executor::write_notes(notes);
                return Ran::Done(out);
            }
            Progress::Call(call) => match calls::dispatch(&call) {
                Some(token) => {
                    return Ran::Waiting(Pending {
                        token,
                        op,
                        step,
                        drawn,
                    });
                }
                None => {
                    progress = with_env(
                        filter,
                        settings,
                        &mut step,
                        &mut drawn,
                        &mut notes,
                        |env, run| op.answer(env, run, &CallResponse::failed()),
                    );
                }
            },
        }
    }
}

type StoreRun<'r, T> = dyn FnMut(&mut dyn crate::store::StoreView) -> T + 'r;

fn with_env<T, R>(
    filter: &Filter,
    settings: &Settings,
    step: &mut StepFn<T>,
    drawn: &mut Replayed,
    notes: &mut Vec<Note>,
    go: impl FnOnce(&mut Env<'_>, &mut StoreRun<'_, T>) -> R,
) -> R {
    let now = super::abi::now_seconds();
    let mut host = HostRandom;
    let mut local = SharedData;
    let mut run = |view: &mut dyn crate::store::StoreView| {
        // Each run of the step draws what the run before drew.
        let mut random = drawn.rerun(&mut host);
        let mut ctx = Ctx {
            filter,
            now,
            random: &mut random as &mut dyn Random,
            kv: view,
            notes: Vec::new(),
        };
        let out = step(&mut ctx);
        *notes = ctx.notes;
        out
    };
    SESSION.with(|session| {
        let mut session = session.borrow_mut();
        let mut env = Env {
            settings,
            now,
            local: &mut local,
            session: &mut session,
            writes_allowed: HostRandom::healthy(),
        };
        go(&mut env, &mut run)
    })
}
