// Compiles the test contracts with solc-js (fully offline) and prints {name: {abi, bytecode}}.
// Usage: node compile.js <node_modules dir> <contract files...>
const fs = require("fs");
const path = require("path");
const modules = process.argv[2];
const solc = require(path.join(modules, "solc"));
const sources = {};
for (const file of process.argv.slice(3)) sources[path.basename(file)] = { content: fs.readFileSync(file, "utf8") };
const input = {
  language: "Solidity",
  sources,
  settings: { optimizer: { enabled: true, runs: 200 }, evmVersion: "cancun", outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } } },
};
function findImports(p) {
  try {
    return { contents: fs.readFileSync(path.join(modules, p), "utf8") };
  } catch (e) {
    return { error: "not found: " + p };
  }
}
const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (out.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const result = {};
for (const file of Object.keys(out.contracts)) {
  for (const [name, c] of Object.entries(out.contracts[file])) result[name] = { abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
}
process.stdout.write(JSON.stringify(result));
