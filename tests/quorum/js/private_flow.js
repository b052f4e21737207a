// Unmodified web3js-quorum 22.x (web3.js 1.x): private ERC-20 between parties at their own
// members' party endpoints, each pinning the service certificate as its only CA.
// Usage: node private_flow.js <config.json> ; prints one JSON line of what each party saw.
const fs = require("fs");
const https = require("https");
const Web3 = require("web3");
const Web3Quorum = require("web3js-quorum");

const cfg = JSON.parse(fs.readFileSync(process.argv[2]));
const ca = fs.readFileSync(cfg.ca);

function party(i) {
  const agent = new https.Agent({ ca });
  const provider = new Web3.providers.HttpProvider(cfg.urls[i], {
    agent: { https: agent },
    headers: [{ name: "Authorization", value: `Bearer ${cfg.tokens[i]}` }],
  });
  const web3 = new Web3Quorum(new Web3(provider), { privateUrl: cfg.urls[i], tlsSettings: { cacert: ca } }, true);
  const account = web3.eth.accounts.privateKeyToAccount(cfg.accounts[i]);
  return { web3, account, key: cfg.keys[i] };
}

async function step(name, promise) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`step ${name} took over 90 s`)), 90000);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function sendPrivate(p, fields, privateFor) {
  const nonce = await p.web3.eth.getTransactionCount(p.account.address);
  return p.web3.priv.generateAndSendRawTransaction({
    ...fields,
    from: p.account,
    privateFrom: p.key,
    privateFor,
    nonce,
    gasLimit: 3000000,
    gasPrice: 0,
    value: 0,
    isPrivate: true,
  });
}

async function balance(p, token, who) {
  const c = new p.web3.eth.Contract(cfg.token.abi, token);
  const data = c.methods.balanceOf(who).encodeABI();
  const out = await p.web3.eth.call({ to: token, data });
  return out === "0x" ? null : p.web3.utils.hexToNumberString(out);
}

async function main() {
  const [a, b, c] = [0, 1, 2].map(party);
  const erc20 = new a.web3.eth.Contract(cfg.token.abi);
  const deployData = erc20.deploy({ data: cfg.token.bytecode, arguments: [cfg.supply] }).encodeABI();
  const deployed = await step("deploy", sendPrivate(a, { data: deployData }, [b.key]));
  const token = deployed.contractAddress;
  const transferData = erc20.methods.transfer(b.account.address, 250).encodeABI();
  const transferred = await step("transfer", sendPrivate(a, { to: token, data: transferData }, [b.key]));
  const backData = erc20.methods.transfer(a.account.address, 50).encodeABI();
  const back = await step("b sends", sendPrivate(b, { to: token, data: backData }, [a.key]));
  const other = await step(
    "second group",
    sendPrivate(a, { data: erc20.deploy({ data: cfg.token.bytecode, arguments: [7] }).encodeABI() }, [c.key]),
  );
  const out = {
    token,
    deployStatus: deployed.status,
    transferLogs: transferred.logs.length,
    backStatus: back.status,
    aBalance: await balance(a, token, a.account.address),
    bBalanceAtB: await balance(b, token, b.account.address),
    bSeesA: await balance(b, token, a.account.address),
    cBalance: await balance(c, token, a.account.address),
    cCode: await c.web3.eth.getCode(token),
    aCodeLength: (await a.web3.eth.getCode(token)).length,
    cReceipt: await c.web3.eth.getTransactionReceipt(deployed.transactionHash),
    cTransferReceipt: await c.web3.eth.getTransactionReceipt(transferred.transactionHash),
    marker: await a.web3.eth.getTransaction(deployed.transactionHash),
    aPayloadLength: 0,
    cPayload: null,
    otherToken: other.contractAddress,
    bOtherCode: await b.web3.eth.getCode(other.contractAddress),
    cOtherCodeLength: (await c.web3.eth.getCode(other.contractAddress)).length,
  };
  out.aPayloadLength = (await a.web3.eth.getQuorumPayload(out.marker.input)).length;
  out.cPayload = await c.web3.eth.getQuorumPayload(out.marker.input);
  out.deployHash = deployed.transactionHash;
  out.deployData = deployData;
  out.transferHash = transferred.transactionHash;
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(String((e && e.stack) || e));
  process.exit(1);
});
