"""An xo (tic-tac-toe) transaction processor: the Sawtooth SDK's unmodified processor runtime
(`sawtooth_sdk.processor.core.TransactionProcessor`, Python 3.9) with a handler for the XO family
(xo 1.0), written here from the family's specification because the SDK's own example handler is not
published as a package.

xo 1.0: the payload is UTF-8 CSV "name,action,space" with action `create`, `take` (space 1 to 9)
or `delete`; a name has no "|". A game lives at address sha512("xo")[:6] + sha512(name)[:64], whose
data is UTF-8 "name,board,state,player1,player2", games whose addresses collide joined by "|" in
sorted order. The board is nine of "-", "X", "O" (spaces 1 to 9, row by row); the state is P1-NEXT,
P2-NEXT, P1-WIN, P2-WIN or TIE; the players are the public keys of the first two signers to take a
space (empty until then). Player 1 plays X. A take out of turn, on a taken space, or in a game that
ended is an invalid transaction.

    python xo_tp.py tcp://127.0.0.1:4004
"""

import hashlib
import sys

from sawtooth_sdk.processor.core import TransactionProcessor
from sawtooth_sdk.processor.exceptions import InternalError, InvalidTransaction
from sawtooth_sdk.processor.handler import TransactionHandler

FAMILY = "xo"
PREFIX = hashlib.sha512(FAMILY.encode()).hexdigest()[:6]
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
ENDED = ("P1-WIN", "P2-WIN", "TIE")


def address(name):
    return PREFIX + hashlib.sha512(name.encode()).hexdigest()[:64]


class XoHandler(TransactionHandler):
    family_name = FAMILY
    family_versions = ["1.0"]
    namespaces = [PREFIX]

    def apply(self, transaction, context):
        signer = transaction.header.signer_public_key
        name, action, space = decode(transaction.payload)
        addr = address(name)
        games = load(context, addr)
        if action == "create":
            if name in games:
                raise InvalidTransaction(f"Invalid action: game already exists: {name}")
            games[name] = ["-" * 9, "P1-NEXT", "", ""]
        elif action == "delete":
            if name not in games:
                raise InvalidTransaction("Invalid action: game does not exist")
            del games[name]
        else:
            games[name] = take(games.get(name), space, signer)
        store(context, addr, games)


def take(game, space, signer):
    if game is None:
        raise InvalidTransaction("Invalid action: take requires an existing game")
    board, state, player1, player2 = game
    if state in ENDED:
        raise InvalidTransaction("Invalid action: the game has ended")
    if (player1 and state == "P1-NEXT" and player1 != signer) or (player2 and state == "P2-NEXT" and player2 != signer):
        raise InvalidTransaction(f"Not this player's turn: {signer[:6]}")
    if board[space - 1] != "-":
        raise InvalidTransaction(f"Invalid action: space {space} already taken")
    if not player1:
        player1 = signer
    elif not player2:
        player2 = signer
    mark = "X" if state == "P1-NEXT" else "O"
    board = board[: space - 1] + mark + board[space:]
    return [board, next_state(board, state), player1, player2]


def next_state(board, state):
    x_wins, o_wins = (any(all(board[i] == m for i in line) for line in LINES) for m in "XO")
    if x_wins and o_wins:
        raise InternalError("both players have a line")
    if x_wins:
        return "P1-WIN"
    if o_wins:
        return "P2-WIN"
    if "-" not in board:
        return "TIE"
    return "P2-NEXT" if state == "P1-NEXT" else "P1-NEXT"


def decode(payload):
    try:
        name, action, space = payload.decode().split(",")
    except (UnicodeDecodeError, ValueError):
        raise InvalidTransaction("Invalid payload serialization: name,action,space") from None
    if not name:
        raise InvalidTransaction("Name is required")
    if "|" in name:
        raise InvalidTransaction('Name cannot contain "|"')
    if action not in ("create", "take", "delete"):
        raise InvalidTransaction(f"Invalid action: {action!r}")
    if action != "take":
        return name, action, None
    if not (space.isascii() and space.isdigit() and 1 <= int(space) <= 9):
        raise InvalidTransaction("Space must be an integer from 1 to 9")
    return name, action, int(space)


def load(context, addr):
    entries = context.get_state([addr])
    if not entries or not entries[0].data:
        return {}
    games = {}
    try:
        for text in entries[0].data.decode().split("|"):
            name, board, state, player1, player2 = text.split(",")
            games[name] = [board, state, player1, player2]
    except (UnicodeDecodeError, ValueError):
        raise InternalError(f"the state at {addr} is not xo games") from None
    return games


def store(context, addr, games):
    if not games:
        context.delete_state([addr])
        return
    text = "|".join(sorted(",".join([name, *game]) for name, game in games.items()))
    context.set_state({addr: text.encode()})


def main():
    processor = TransactionProcessor(url=sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:4004")
    processor.add_handler(XoHandler())
    try:
        processor.start()
    except KeyboardInterrupt:
        pass
    finally:
        processor.stop()


if __name__ == "__main__":
    main()
