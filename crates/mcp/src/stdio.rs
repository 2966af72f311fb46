//! Stdio servers: commands the operator registered, run by Flywheel itself. One process serves
//! one client session (so a stateful server sees one session), in the server's own working
//! directory, in its own process group, with an address-space limit, killed when Flywheel
//! exits (kill on drop, and `PR_SET_PDEATHSIG` if Flywheel dies) and, after a crash, at the
//! next start (the groups it ran are listed in `children`). A process that exits is replaced
//! at the next call; one idle too long is stopped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::oneshot;

use crate::client::{RpcError, UPSTREAM_VERSION};
use crate::error::McpError;

/// The longest line (one JSON-RPC message) a process may write.
const MAX_LINE: usize = 8 << 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct StdioCommand {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Limits on the processes of one server.
#[derive(Debug, Clone)]
pub struct StdioLimits {
    /// Processes one server may run at once (one per client session).
    pub max_processes: usize,
    /// Address space of one process, in bytes (`RLIMIT_AS`); 0: none.
    pub memory_bytes: u64,
    /// A process idle this long is stopped.
    pub idle: Duration,
    /// One request's limit.
    pub call_timeout: Duration,
}

impl Default for StdioLimits {
    fn default() -> Self {
        Self {
            max_processes: 16,
            memory_bytes: 4 << 30,
            idle: Duration::from_secs(600),
            call_timeout: Duration::from_secs(60),
        }
    }
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Value>>>;

/// One running server process.
pub(crate) struct Process {
    name: String,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Arc<Pending>,
    next_id: AtomicU64,
    alive: Arc<AtomicBool>,
    pgid: Option<i32>,
    last_used: Mutex<Instant>,
    version: Mutex<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Process {
    async fn spawn(
        name: &str,
        command: &StdioCommand,
        dir: PathBuf,
        limits: &StdioLimits,
    ) -> Result<Arc<Process>, McpError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| McpError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Flywheel's own settings (its keys, its database) are not the server's business.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FLYWHEEL_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(command.env.iter().map(|(k, v)| (k, v)));
        #[cfg(unix)]
        {
            cmd.process_group(0);
            let memory = limits.memory_bytes;
            // SAFETY: only async-signal-safe calls (prctl, setrlimit) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    #[cfg(target_os = "linux")]
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if memory > 0 {
                        let limit = libc::rlimit {
                            rlim_cur: memory,
                            rlim_max: memory,
                        };
                        libc::setrlimit(libc::RLIMIT_AS, &limit);
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            McpError::Upstream(format!(
                "the MCP server '{name}' could not be started ({}): {e}",
                command.program
            ))
        })?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(McpError::Internal("a child process has no pipes".into()));
        };
        let process = Arc::new(Process {
            name: name.to_owned(),
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
            alive: Arc::new(AtomicBool::new(true)),
            pgid,
            last_used: Mutex::new(Instant::now()),
            version: Mutex::new(UPSTREAM_VERSION.to_owned()),
        });
        tokio::spawn(read_messages(
            stdout,
            process.pending.clone(),
            process.alive.clone(),
            Arc::downgrade(&process),
        ));
        tokio::spawn(log_stderr(stderr, name.to_owned()));
        // The child is waited for by tokio (kill_on_drop reaps it); keep it until it exits.
        tokio::spawn(async move {
            let status = child.wait().await;
            tracing::debug!(?status, "MCP stdio server exited");
        });
        let init = process
            .request(
                "initialize",
                Some(json!({
                    "protocolVersion": UPSTREAM_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "flywheel", "version": env!("CARGO_PKG_VERSION")},
                })),
                limits.call_timeout,
            )
            .await?
            .map_err(|e| e.refused(name, "initialize"))?;
        if let Some(v) = init.get("protocolVersion").and_then(Value::as_str) {
            *process.version.lock().unwrap_or_else(|e| e.into_inner()) = v.to_owned();
        }
        process
            .write(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        tracing::info!(server = name, pgid, "MCP stdio server started");
        Ok(process)
    }

    fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn kill(&self) {
        self.alive.store(false, Ordering::Release);
        #[cfg(unix)]
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) on our own child's process group.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    async fn write(&self, message: &Value) -> Result<(), McpError> {
        let mut line =
            serde_json::to_vec(message).map_err(|e| McpError::Internal(e.to_string()))?;
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        let written = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        };
        written.await.map_err(|e| {
            McpError::Upstream(format!(
                "the MCP server '{}' stopped reading: {e}",
                self.name
            ))
        })
    }

    /// One request: its result or JSON-RPC error, within `timeout`.
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<Result<Value, RpcError>, McpError> {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut message = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(p) = params {
            message["params"] = p;
        }
        if let Err(e) = self.write(&message).await {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(e);
        }
        let answer = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => {
                return Err(McpError::Upstream(format!(
                    "the MCP server '{}' exited before it answered {method}",
                    self.name
                )))
            }
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                return Err(McpError::Upstream(format!(
                    "the MCP server '{}' did not answer {method} within {} s",
                    self.name,
                    timeout.as_secs()
                )));
            }
        };
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        match answer {
            Value::Object(mut o) => match (o.remove("error"), o.remove("result")) {
                (Some(e), _) => Ok(Err(RpcError(e))),
                (None, Some(r)) => Ok(Ok(r)),
                (None, None) => Err(McpError::Upstream(format!(
                    "the MCP server '{}' answered {method} with neither result nor error",
                    self.name
                ))),
            },
            _ => Err(McpError::Upstream(format!(
                "the MCP server '{}' answered {method} with something that is not JSON-RPC",
                self.name
            ))),
        }
    }
}

/// Reads one message per line; answers go to their waiting request. Requests the server
/// makes of its client (sampling, roots) are refused; notifications are dropped.
async fn read_messages(
    stdout: impl AsyncRead + Unpin,
    pending: Arc<Pending>,
    alive: Arc<AtomicBool>,
    process: std::sync::Weak<Process>,
) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) if n > MAX_LINE => {
                tracing::warn!("an MCP stdio server wrote a message over 8 MiB; stopping it");
                break;
            }
            Ok(_) => {}
        }
        let Ok(message) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let id = message.get("id").and_then(Value::as_u64);
        let is_answer = message.get("result").is_some() || message.get("error").is_some();
        match (id, is_answer, message.get("method")) {
            (Some(id), true, None) => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(tx) = waiter {
                    let _ = tx.send(message);
                }
            }
            (_, false, Some(_)) if message.get("id").is_some() => {
                if let Some(p) = process.upgrade() {
                    let refusal = json!({"jsonrpc": "2.0", "id": message["id"], "error": {
                        "code": -32601,
                        "message": "Flywheel's MCP gateway does not serve requests from servers"
                    }});
                    let _ = p.write(&refusal).await;
                }
            }
            _ => {}
        }
    }
    alive.store(false, Ordering::Release);
    // Every request still waiting learns the process is gone.
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
    if let Some(p) = process.upgrade() {
        p.kill();
    }
}

async fn log_stderr(stderr: impl AsyncRead + Unpin, name: String) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line: String = line.chars().take(2000).collect();
        tracing::debug!(server = %name, "{line}");
    }
}

/// The processes of every stdio server, by server and client session.
pub(crate) struct StdioPool {
    root: PathBuf,
    limits: StdioLimits,
    processes: Mutex<HashMap<(String, String), Arc<Process>>>,
    starting: tokio::sync::Mutex<()>,
}

impl StdioPool {
    /// Processes run under `root/<server id>`; `root/children` lists their process groups, and
    /// groups left by a previous run that crashed are killed now.
    pub(crate) fn new(root: PathBuf, limits: StdioLimits) -> Self {
        let _ = std::fs::create_dir_all(&root);
        let root = root.canonicalize().unwrap_or(root);
        let pool = Self {
            root,
            limits,
            processes: Mutex::default(),
            starting: tokio::sync::Mutex::new(()),
        };
        pool.kill_leftovers();
        pool
    }

    pub(crate) fn limits(&self) -> &StdioLimits {
        &self.limits
    }

    fn children_file(&self) -> PathBuf {
        self.root.join("children")
    }

    fn kill_leftovers(&self) {
        let Ok(text) = std::fs::read_to_string(self.children_file()) else {
            return;
        };
        for pgid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // Only a group whose leader still works in our directory: the id may have been
            // reused by an unrelated process since.
            let ours = std::fs::read_link(format!("/proc/{pgid}/cwd"))
                .is_ok_and(|cwd| cwd.starts_with(&self.root));
            if !ours {
                continue;
            }
            #[cfg(unix)]
            if pgid > 1 {
                // SAFETY: kill(2); a group that no longer exists is ESRCH.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            tracing::info!(pgid, "killed an MCP stdio server left by a previous run");
        }
        let _ = std::fs::remove_file(self.children_file());
    }

    fn record_children(&self, map: &HashMap<(String, String), Arc<Process>>) {
        let text: String = map
            .values()
            .filter_map(|p| p.pgid)
            .map(|g| format!("{g}\n"))
            .collect();
        if std::fs::create_dir_all(&self.root).is_ok() {
            let _ = std::fs::write(self.children_file(), text);
        }
    }

    /// The process serving `session` for the server `server_id`, started if it has none or
    /// its process exited.
    pub(crate) async fn process(
        &self,
        server_id: &str,
        name: &str,
        session: &str,
        command: &StdioCommand,
    ) -> Result<Arc<Process>, McpError> {
        let key = (server_id.to_owned(), session.to_owned());
        if let Some(p) = self.live(&key) {
            return Ok(p);
        }
        let _one_at_a_time = self.starting.lock().await;
        if let Some(p) = self.live(&key) {
            return Ok(p);
        }
        self.make_room(server_id, name)?;
        let dir = self.root.join(server_id);
        let process = Process::spawn(name, command, dir, &self.limits).await?;
        let mut map = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key, process.clone());
        self.record_children(&map);
        Ok(process)
    }

    fn live(&self, key: &(String, String)) -> Option<Arc<Process>> {
        let mut map = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some(p) if p.alive() => Some(p.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stops the least recently used idle process of the server if it is at its limit.
    fn make_room(&self, server_id: &str, name: &str) -> Result<(), McpError> {
        let mut map = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, p| p.alive());
        let mine: Vec<_> = map
            .iter()
            .filter(|((s, _), _)| s == server_id)
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        if mine.len() < self.limits.max_processes {
            return Ok(());
        }
        let idle = mine
            .into_iter()
            .filter(|(_, p)| {
                p.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
            })
            .min_by_key(|(_, p)| *p.last_used.lock().unwrap_or_else(|e| e.into_inner()));
        match idle {
            Some((key, _)) => {
                map.remove(&key);
                Ok(())
            }
            None => Err(McpError::Upstream(format!(
                "the MCP server '{name}' already runs {} processes, all busy (its limit); try again shortly",
                self.limits.max_processes
            ))),
        }
    }

    /// Stops processes idle past the limit; how many.
    pub(crate) fn reap(&self) -> usize {
        let mut map = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        let idle = self.limits.idle;
        map.retain(|_, p| {
            p.alive()
                && (p
                    .last_used
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed()
                    < idle
                    || !p
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_empty())
        });
        let stopped = before - map.len();
        if stopped > 0 {
            self.record_children(&map);
        }
        stopped
    }

    /// Stops every process of `server_id` (it was changed or deleted).
    pub(crate) fn stop_server(&self, server_id: &str) {
        let mut map = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(s, _), _| s != server_id);
        self.record_children(&map);
    }

    /// Stops the process of one session (it ended).
    pub(crate) fn stop_session(&self, session: &str) {
        let mut map = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(_, s), _| s != session);
        self.record_children(&map);
    }
}
