// Summarises a conformance run from the suite's own result files:
//   node summary.mjs <results dir> <expected-failures.yml> <version>/<scenario>...
// Each run's checks are in <results dir>/<version>/<scenario>/*/checks.json.
// Prints one line per run, every failing check (excused or not), and a closing
// `conformance: N passed, N failed, N skipped` line. Exits 1 if a check failed
// that expected-failures.yml does not excuse, or if a run left no checks (a
// scenario the suite skipped as not applicable would otherwise pass silently).

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [resultsDir, baselinePath, ...runs] = process.argv.slice(2);

// Only the `- <scenario>:<check-id>` entries of our own file, which has no
// other kind; a whole-scenario entry would be a mistake, so it is refused.
const excused = new Set();
for (const line of readFileSync(baselinePath, "utf8").split("\n")) {
  const entry = line.match(/^\s*-\s*(\S+)/);
  if (!entry) continue;
  if (!entry[1].includes(":")) {
    console.error(`${baselinePath}: \`${entry[1]}\` excuses a whole scenario; name single checks`);
    process.exit(1);
  }
  excused.add(entry[1]);
}

function checksOf(run) {
  const dir = join(resultsDir, run);
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return null;
  }
  const checks = entries.flatMap((entry) => {
    try {
      return JSON.parse(readFileSync(join(dir, entry, "checks.json"), "utf8"));
    } catch {
      return [];
    }
  });
  return checks.length > 0 ? checks : null;
}

const total = { passed: 0, failed: 0, skipped: 0 };
const problems = [];
for (const run of runs) {
  const [version, scenario] = run.split("/");
  const checks = checksOf(run);
  if (checks === null) {
    problems.push(`${run}: no checks were run`);
    total.failed += 1;
    console.log(`  ${run.padEnd(44)} NO CHECKS`);
    continue;
  }
  const counts = { passed: 0, failed: 0, excused: 0, skipped: 0, warnings: 0 };
  const notes = [];
  for (const check of checks) {
    const id = `${scenario}:${check.id}`;
    switch (check.status) {
      case "SUCCESS":
        if (excused.has(id)) {
          // A stale entry fails the runner too; this says which one it is.
          counts.failed += 1;
          notes.push(`    STALE    ${check.id}: passes, so expected-failures.yml must not list it`);
          problems.push(`${version} ${id}: passes but is listed in expected-failures.yml`);
        } else {
          counts.passed += 1;
        }
        break;
      case "FAILURE":
        if (excused.has(id)) {
          counts.excused += 1;
          notes.push(`    excused  ${check.id}: ${check.errorMessage ?? ""}`);
        } else {
          counts.failed += 1;
          notes.push(`    FAILED   ${check.id}: ${check.errorMessage ?? ""}`);
          problems.push(`${version} ${id}: ${check.errorMessage ?? ""}`);
        }
        break;
      case "WARNING":
        counts.warnings += 1;
        notes.push(`    warning  ${check.id}: ${check.errorMessage ?? ""}`);
        break;
      case "SKIPPED":
        counts.skipped += 1;
        break;
      default:
        // INFO: a note from the suite, neither a pass nor a failure.
        break;
    }
  }
  total.passed += counts.passed;
  total.failed += counts.failed;
  total.skipped += counts.excused + counts.skipped;
  const parts = [`${counts.passed} passed`, `${counts.failed} failed`];
  if (counts.excused) parts.push(`${counts.excused} excused`);
  if (counts.skipped) parts.push(`${counts.skipped} skipped by the suite`);
  if (counts.warnings) parts.push(`${counts.warnings} warnings`);
  console.log(`  ${run.padEnd(44)} ${parts.join(", ")}`);
  for (const note of notes) console.log(note);
}

if (problems.length > 0) {
  console.log("\nUnexpected failures:");
  for (const problem of problems) console.log(`  ${problem}`);
}
console.log(`\nconformance: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped`);
process.exit(problems.length > 0 ? 1 : 0);
