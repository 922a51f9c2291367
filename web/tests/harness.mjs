// What the browser tests start: two SecantusDB test servers, `mongoferry serve`, and Debian's
// chromium driven by playwright-core. Every process started here is stopped by `stopAll` (the
// tests' `after` hook), on exit and on SIGINT/SIGTERM; on Linux each child also gets SIGKILL when
// this process dies (`setpriv --pdeathsig`), so none outlives a killed test run.

import { spawn, execFile, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const SCREENSHOTS = path.join(ROOT, "target", "screenshots");

const children = new Set();
/** Temporary directories made by `tempDir`, removed once the children that use them have stopped. */
const tempDirs = new Set();
/** Every temporary directory of this run starts so (pid: a concurrent run has its own). */
export const TEMP_PREFIX = `mongoferry-web-${process.pid}-`;

// The services started here get their token, if any, from a file the test names: one inherited
// from the environment would change what they ask for.
delete process.env.MONGOFERRY_API_TOKEN;

function which(name) {
  try {
    return execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim() || null;
  } catch {
    return null;
  }
}

const SETPRIV = process.platform === "linux" ? which("setpriv") : null;

/** Starts a child that this process owns; its output goes to `onLine`, line by line. */
export function startChild(command, args, onLine = () => {}) {
  const [file, argv] = SETPRIV ? [SETPRIV, ["--pdeathsig", "KILL", "--", command, ...args]] : [command, args];
  const child = spawn(file, argv, { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  child.on("exit", () => children.delete(child));
  for (const stream of [child.stdout, child.stderr]) {
    let buffered = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        onLine(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
    });
  }
  return child;
}

/** Stops one child and resolves once it has exited: SIGTERM, then SIGKILL after `graceMs`. */
export function stopChild(child, graceMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
    }, graceMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/**
 * Stops every child (see `stopChild`), then removes the temporary directories: a service writes
 * its state when it stops, so its directory goes only once it has exited.
 */
export async function stopAll(graceMs = 5000) {
  await Promise.all([...children].map((child) => stopChild(child, graceMs)));
  removeTempDirs();
}

/** A temporary directory of this run (`mongoferry-web-PID-…`), removed by `stopAll` and on exit. */
export function tempDir() {
  const dir = mkdtempSync(path.join(os.tmpdir(), TEMP_PREFIX));
  tempDirs.add(dir);
  return dir;
}

/** Removes a directory of `tempDir`; stop the processes that write in it first. */
export function removeTempDir(dir) {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

function removeTempDirs() {
  for (const dir of tempDirs) removeTempDir(dir);
}

/** This run's temporary directories still in the temporary folder (none, once `stopAll` ran). */
export function leftTempDirs() {
  return readdirSync(os.tmpdir()).filter((name) => name.startsWith(TEMP_PREFIX));
}

function killAllNow() {
  for (const child of children) child.kill("SIGKILL");
}
process.on("exit", () => {
  killAllNow();
  removeTempDirs();
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    killAllNow();
    process.exit(130);
  });
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` until it returns a truthy value; fails after `timeoutMs` saying `what`. */
export async function waitFor(what, probe, timeoutMs = 10000, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await sleep(everyMs);
  }
}

async function portOpen(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A SecantusDB test server in memory; resolves to its URI once it accepts connections. */
export async function startTestServer(name) {
  const secantusd = path.join(ROOT, ".venv", "bin", "secantusd-py");
  if (!existsSync(secantusd)) throw new Error(`${secantusd} is missing: run bash scripts/setup-test-env.sh`);
  const port = await freePort();
  const log = [];
  const child = startChild(secantusd, ["--host", "127.0.0.1", "--port", String(port), "--storage-path", ":memory:", "--log-level", "WARNING"], (line) => log.push(line));
  await waitFor(`test server ${name} on port ${port}`, async () => {
    if (child.exitCode !== null) throw new Error(`test server ${name} exited: ${log.join("\n")}`);
    return portOpen(port);
  }, 60000, 100);
  return `mongodb://127.0.0.1:${port}/?directConnection=true`;
}

/** The mongoferry binary the tests use: $MONGOFERRY_BIN, else the debug build. */
export function binary() {
  const bin = process.env.MONGOFERRY_BIN ?? path.join(ROOT, "target", "debug", "mongoferry");
  if (!existsSync(bin)) throw new Error(`${bin} is missing: build it with cargo build --bin mongoferry`);
  return bin;
}

/** Runs `mongoferry sample`, bounded in time. */
export async function sample(uri, ns, count, docSize) {
  await promisify(execFile)(binary(), ["sample", "--to", uri, "--ns", ns, "--count", String(count), "--doc-size", String(docSize), "--quiet"], { timeout: 60000 });
}

/**
 * `mongoferry serve`: its base URL, its output and its process. By default on a free port and
 * without history; `state` keeps the history (and checkpoints) in that file, `listen` picks the
 * address (a restarted service on the same address and state continues its interrupted jobs),
 * `tokenFile` makes it ask for the API token in that file.
 */
export async function startService({ listen = "127.0.0.1:0", state = null, tokenFile = null } = {}) {
  const log = [];
  let address = null;
  const stateArgs = state ? ["--state", state] : ["--no-state"];
  const tokenArgs = tokenFile ? ["--auth-token-file", tokenFile] : [];
  const child = startChild(binary(), ["serve", "--listen", listen, ...stateArgs, ...tokenArgs, "--shutdown-timeout", "5"], (line) => {
    log.push(line);
    const match = /serving on (http:\/\/\S+)/.exec(line);
    if (match) address = match[1];
  });
  await waitFor("mongoferry serve to print its address", () => {
    if (child.exitCode !== null) throw new Error(`mongoferry serve exited: ${log.join("\n")}`);
    return address;
  }, 30000, 50);
  return { base: address, log, child };
}

/** Debian's chromium, headless, with the flags of design.md §7. */
export async function launchBrowser() {
  const { chromium } = await import("playwright-core");
  const executablePath = which("chromium");
  if (!executablePath) throw new Error("chromium is missing: run bash scripts/setup-test-env.sh");
  return chromium.launch({
    executablePath,
    headless: true,
    timeout: 30000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export function screenshotPath(name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return path.join(SCREENSHOTS, `${name}.png`);
}

/**
 * Runs one database command (`command`: a plain object, sent as Extended JSON) on database `db`
 * of the server at `uri`, through pymongo in the test venv; bounded in time.
 */
export async function runCommand(uri, db, command) {
  const script = [
    "import sys, pymongo",
    "from bson import json_util",
    "client = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000)",
    "client[sys.argv[2]].command(json_util.loads(sys.argv[3]))",
  ].join("\n");
  await promisify(execFile)(path.join(ROOT, ".venv", "bin", "python"), ["-c", script, uri, db, JSON.stringify(command)], { timeout: 30000 });
}

/** How many documents of `ns` match `filter` (extended JSON), through a client of its own, bounded. */
export async function countDocuments(uri, ns, filter = {}) {
  const script = [
    "import sys, pymongo",
    "from bson import json_util",
    "client = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000)",
    "db, _, coll = sys.argv[2].partition('.')",
    "print(client[db][coll].count_documents(json_util.loads(sys.argv[3])))",
  ].join("\n");
  const { stdout } = await promisify(execFile)(path.join(ROOT, ".venv", "bin", "python"), ["-c", script, uri, ns, JSON.stringify(filter)], { timeout: 30000 });
  return Number(stdout.trim());
}

/** Drops the databases whose names start with `prefix` (runs against a shared server), bounded. */
export async function dropDatabases(uri, prefix) {
  const script = [
    "import sys, pymongo",
    "client = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000)",
    "for name in client.list_database_names():",
    "    if name.startswith(sys.argv[2]):",
    "        client.drop_database(name)",
  ].join("\n");
  await promisify(execFile)(path.join(ROOT, ".venv", "bin", "python"), ["-c", script, uri, prefix], { timeout: 30000 });
}
