// The chart library in web/vendor/ is the npm package pinned in package-lock.json, file for file,
// with its licence: the served copy can be traced to its source and updated by copying again.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";

import { ROOT } from "./harness.mjs";

const pkg = (file) => path.join(ROOT, "web", "tests", "node_modules", "uplot", file);
const vendored = (file) => path.join(ROOT, "web", "vendor", file);

test("web/vendor holds uPlot as published, with its licence", () => {
  const lock = JSON.parse(readFileSync(path.join(ROOT, "web", "tests", "package-lock.json"), "utf8"));
  const installed = JSON.parse(readFileSync(pkg("package.json"), "utf8"));
  assert.equal(installed.version, lock.packages["node_modules/uplot"].version);
  assert.equal(installed.license, "MIT");
  for (const [published, copy] of [
    ["dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
    ["dist/uPlot.min.css", "uPlot.min.css"],
    ["LICENSE", "uPlot.LICENSE"],
  ]) {
    assert.ok(readFileSync(pkg(published)).equals(readFileSync(vendored(copy))), `web/vendor/${copy} differs from uplot's ${published}`);
  }
});
