// Unmodified web3js-quorum 22.x against a member's party endpoint: the Tessera calls it makes for
// an externally signed private transaction. Pins the service certificate as the only CA.
// Usage: node ptm_flow.js <party url> <service cert file> <payload hex> ; prints one JSON line.
const fs = require("fs");
const Web3 = require("web3");
const Web3Quorum = require("web3js-quorum");

async function main() {
  const [url, caFile, dataHex] = process.argv.slice(2);
  const web3 = new Web3Quorum(
    new Web3("http://127.0.0.1:1"),
    { privateUrl: url, tlsSettings: { cacert: fs.readFileSync(caFile) } },
    true,
  );
  const up = await web3.ptm.upCheck();
  const keys = JSON.parse(await web3.ptm.keys());
  const party = JSON.parse(await web3.ptm.partyInfoKeys());
  const own = keys.keys[0].key;
  const hash = await web3.ptm.storeRaw({ data: dataHex, privateFrom: own });
  let foreign = null;
  const other = party.keys.map((k) => k.key).find((k) => k !== own);
  try {
    await web3.ptm.storeRaw({ data: dataHex, privateFrom: other });
  } catch (e) {
    foreign = { status: e.statusCode, body: e.error };
  }
  console.log(JSON.stringify({ up, keys, party, hash, foreign }));
}

main().catch((e) => {
  console.error(String((e && e.stack) || e));
  process.exit(1);
});
