// An unmodified ethers 6 session against a JSON-RPC endpoint: deploy an ERC-20, transfer, read
// balances and events, a revert with its reason, a custom error, a burst of sequential
// transactions from one account, a stale nonce, a value transfer. Prints what it saw as JSON for the Python test to check.
// Usage: node ethers_flow.js <node_modules> <rpc url> <private key> <compiled.json>
const path = require("path");
const fs = require("fs");
const { ethers } = require(path.join(process.argv[2], "ethers"));

const { step } = require("./step.js");

async function main() {
  const [, , , url, key, compiledPath] = process.argv;
  const compiled = JSON.parse(fs.readFileSync(compiledPath, "utf8"));
  const provider = new ethers.JsonRpcProvider(url, undefined, { pollingInterval: 100 });
  const base = new ethers.Wallet(key, provider);
  // ethers reuses an identical request's answer for 250 ms: on a ledger that commits in tens of
  // milliseconds the "pending" nonce it fetched for the previous transaction is stale by then.
  // Its NonceManager counts nonces itself, as applications talking to fast chains do.
  const wallet = new ethers.NonceManager(base);
  const other = ethers.Wallet.createRandom().address;
  const out = { chainId: Number((await provider.getNetwork()).chainId) };

  const factory = new ethers.ContractFactory(compiled.Token.abi, compiled.Token.bytecode, wallet);
  const token = await factory.deploy(ethers.parseEther("1000"));
  await step("deploy the token", token.waitForDeployment());
  out.token = await token.getAddress();
  const tx = await token.transfer(other, ethers.parseEther("2"));
  const receipt = await step("wait for the transfer", tx.wait());
  out.transferStatus = receipt.status;
  out.transferLogs = receipt.logs.length;
  out.balance = (await token.balanceOf(other)).toString();
  const events = await token.queryFilter(token.filters.Transfer(null, other), 0, "latest");
  out.events = events.map((e) => e.args.value.toString());

  try {
    await token.transfer.staticCall(other, ethers.parseEther("1000000"));
    out.customError = null;
  } catch (e) {
    out.customError = e.revert ? e.revert.name : e.code;
  }
  const probe = await new ethers.ContractFactory(compiled.Probe.abi, compiled.Probe.bytecode, wallet).deploy();
  await step("deploy the probe", probe.waitForDeployment());
  try {
    await probe.store.staticCall(13);
    out.reason = null;
  } catch (e) {
    out.reason = e.reason;
  }
  // Sent without estimating, so it is mined and reverts: a receipt with status 0.
  const refused = await probe.store(7, { gasLimit: 100000 });
  try {
    await step("wait for the reverted transaction", refused.wait());
    out.refused = null;
  } catch (e) {
    out.refused = e.code;
  }

  // A burst: ten transfers sent back to back with consecutive nonces, then all awaited.
  const sent = [];
  for (let i = 0; i < 10; i++) sent.push(await token.transfer(other, 1, { gasLimit: 100000 }));
  const mined = await step("wait for the burst", Promise.all(sent.map((t) => t.wait())));
  out.burst = mined.map((r) => r.status);
  out.balanceAfterBurst = (await token.balanceOf(other)).toString();

  // A stale nonce: geth's "nonce too low", which ethers calls NONCE_EXPIRED.
  try {
    await base.sendTransaction({ to: other, value: 1, nonce: 0, gasLimit: 21000 });
    out.staleNonce = null;
  } catch (e) {
    out.staleNonce = e.code;
  }
  const value = await wallet.sendTransaction({ to: other, value: ethers.parseEther("0.5") });
  await step("wait for the value transfer", value.wait());
  out.etherBalance = (await provider.getBalance(other)).toString();
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
