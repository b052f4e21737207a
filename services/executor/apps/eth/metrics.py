"""What an operator watches of the Ethereum application on each executor."""

from prometheus_client import Counter

ETH_TXS = Counter(
    "conclavium_executor_eth_transactions_total", "Ethereum transactions executed, by outcome", ["outcome"]
)
ETH_REVERTS = Counter("conclavium_executor_eth_reverts_total", "Ethereum transactions that reverted or halted")
ETH_GAS = Counter("conclavium_executor_eth_gas_used_total", "Gas used by executed Ethereum transactions")
