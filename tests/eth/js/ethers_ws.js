// An unmodified ethers 6 WebSocketProvider session: block events (eth_subscribe newHeads), a
// contract event listener (eth_subscribe logs), deploy and transfer over the socket, tx.wait()
// driven by the socket's new heads. Prints what it saw as JSON for the Python test to check.
// Usage: node ethers_ws.js <node_modules> <ws url> <private key> <compiled.json>
const path = require("path");
const fs = require("fs");
const { ethers } = require(path.join(process.argv[2], "ethers"));

const { step } = require("./step.js");

async function main() {
  const [, , , url, key, compiledPath] = process.argv;
  const compiled = JSON.parse(fs.readFileSync(compiledPath, "utf8"));
  const provider = new ethers.WebSocketProvider(url);
  const wallet = new ethers.NonceManager(new ethers.Wallet(key, provider));
  const other = ethers.Wallet.createRandom().address;
  const out = { chainId: Number((await step("chain id", provider.getNetwork())).chainId) };

  const blocks = [];
  await provider.on("block", (n) => blocks.push(n));
  const factory = new ethers.ContractFactory(compiled.Token.abi, compiled.Token.bytecode, wallet);
  const token = await step("deploy", factory.deploy(ethers.parseEther("1000")));
  await step("deployed", token.waitForDeployment());

  let heard;
  const event = new Promise((resolve) => {
    heard = resolve;
  });
  // A contract event listener (eth_subscribe logs for the contract's address)...
  await token.on("Transfer", (from, to, value, ev) => {
    if (to === other) heard({ from, to, value: value.toString(), tx: ev.log.transactionHash });
  });
  // ...and provider-level listeners with topic filters, which the gateway matches: one for
  // transfers to `other`, one for transfers to an address nobody pays.
  const address = await token.getAddress();
  const toOther = await token.filters.Transfer(null, other).getTopicFilter();
  const toNobody = await token.filters.Transfer(null, ethers.Wallet.createRandom().address).getTopicFilter();
  const filtered = { toOther: [], toNobody: [] };
  await provider.on({ address, topics: toOther }, (log) => filtered.toOther.push(log.transactionHash));
  await provider.on({ address, topics: toNobody }, (log) => filtered.toNobody.push(log.transactionHash));
  const tx = await step("transfer", token.transfer(other, ethers.parseEther("3")));
  const receipt = await step("wait for the transfer over the socket", tx.wait());
  const seen = await step("the Transfer event", event);
  out.transferStatus = receipt.status;
  out.eventValue = seen.value;
  out.eventMatchesTx = seen.tx === receipt.hash;
  out.eventFrom = seen.from;
  out.balance = (await step("balance over the socket", token.balanceOf(other))).toString();
  // Blocks keep coming (the ledger's idle heartbeats), consecutive and past the transfer's.
  await step(
    "a block after the transfer",
    new Promise((resolve) => {
      const check = () => (blocks.length && blocks[blocks.length - 1] > receipt.blockNumber ? resolve() : setTimeout(check, 50));
      check();
    }),
  );
  out.filteredToOther = filtered.toOther.length === 1 && filtered.toOther[0] === receipt.hash;
  out.filteredToNobody = filtered.toNobody.length;
  out.blocksIncreasing = blocks.every((n, i) => i === 0 || n > blocks[i - 1]);
  out.sawTransferBlock = blocks.includes(receipt.blockNumber);
  // Leaving with the subscriptions open: the gateway drops them with the socket.
  process.stdout.write(JSON.stringify(out), () => process.exit(0));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
