"""Redis (RESP2/RESP3) frames, the exchange, the per-connection state and the protocol's bounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

MAX_DEPTH = 32  # nested aggregates deeper than this are a parse error (RESP3 allows any depth)
MAX_COUNT = (1 << 31) - 1  # elements of one aggregate, as redis-server's own limit (INT_MAX)
MAX_BULK = 1 << 40  # bytes of one bulk string (redis-server's proto-max-bulk-len is 512 MB by default)
SKIP_MIN = 4096  # a bulk body longer than this is passed unbuffered (Skip), never copied
STREAM_MIN = 64 << 10  # a message parsed this far without ending is released in pieces (Skip, more)
LINE_MAX = 64 << 10  # a simple string / error / inline command line (redis-server: 64 KiB inline)
NAME_MAX = 64  # bytes of a command name or subcommand kept (longer: not a known command anyway)
WORD_MAX = 32  # bytes of a reply's first word kept (error prefix, "QUEUED", "message")

# Request frame kinds; a response frame's kind is its reply's RESP type byte (after any attribute).
K_COMMAND = 0  # an array of bulk strings, or an inline command line
K_EMPTY = 1  # "*0\r\n", "*-1\r\n" or an empty inline line: redis-server answers nothing

SIMPLE, ERROR, INTEGER, BULK, ARRAY = ord("+"), ord("-"), ord(":"), ord("$"), ord("*")
NULL, MAP, SET, DOUBLE, BIG_NUMBER = ord("_"), ord("%"), ord("~"), ord(","), ord("(")
BOOLEAN, VERBATIM, BLOB_ERROR, PUSH, ATTRIBUTE = ord("#"), ord("="), ord("!"), ord(">"), ord("|")

_COMMAND_NAMES = (
    "ACL APPEND ASKING AUTH BGREWRITEAOF BGSAVE BITCOUNT BITFIELD BITFIELD_RO BITOP BITPOS BLMOVE BLMPOP "
    "BLPOP BRPOP BRPOPLPUSH BZMPOP BZPOPMAX BZPOPMIN CLIENT CLUSTER COMMAND CONFIG COPY DBSIZE DEBUG DECR "
    "DECRBY DEL DISCARD DUMP ECHO EVAL EVALSHA EVALSHA_RO EVAL_RO EXEC EXISTS EXPIRE EXPIREAT EXPIRETIME "
    "FAILOVER FCALL FCALL_RO FLUSHALL FLUSHDB FUNCTION GEOADD GEODIST GEOHASH GEOPOS GEORADIUS "
    "GEORADIUSBYMEMBER GEORADIUSBYMEMBER_RO GEORADIUS_RO GEOSEARCH GEOSEARCHSTORE GET GETBIT GETDEL GETEX "
    "GETRANGE GETSET HDEL HELLO HEXISTS HEXPIRE HEXPIREAT HEXPIRETIME HGET HGETALL HGETDEL HGETEX HINCRBY "
    "HINCRBYFLOAT HKEYS HLEN HMGET HMSET HPERSIST HPEXPIRE HPEXPIREAT HPEXPIRETIME HPTTL HRANDFIELD HSCAN "
    "HSET HSETEX HSETNX HSTRLEN HTTL HVALS INCR INCRBY INCRBYFLOAT INFO KEYS LASTSAVE LATENCY LCS LINDEX "
    "LINSERT LLEN LMOVE LMPOP LOLWUT LPOP LPOS LPUSH LPUSHX LRANGE LREM LSET LTRIM MEMORY MGET MIGRATE "
    "MODULE MONITOR MOVE MSET MSETNX MULTI OBJECT PERSIST PEXPIRE PEXPIREAT PEXPIRETIME PFADD PFCOUNT "
    "PFDEBUG PFMERGE PFSELFTEST PING PSETEX PSUBSCRIBE PSYNC PTTL PUBLISH PUBSUB PUNSUBSCRIBE QUIT "
    "RANDOMKEY READONLY READWRITE RENAME RENAMENX REPLCONF REPLICAOF RESET RESTORE RESTORE-ASKING ROLE "
    "RPOP RPOPLPUSH RPUSH RPUSHX SADD SAVE SCAN SCARD SCRIPT SDIFF SDIFFSTORE SELECT SET SETBIT SETEX "
    "SETNX SETRANGE SHUTDOWN SINTER SINTERCARD SINTERSTORE SISMEMBER SLAVEOF SLOWLOG SMEMBERS SMISMEMBER "
    "SMOVE SORT SORT_RO SPOP SPUBLISH SRANDMEMBER SREM SSCAN SSUBSCRIBE STRLEN SUBSCRIBE SUBSTR SUNION "
    "SUNIONSTORE SUNSUBSCRIBE SWAPDB SYNC TIME TOUCH TTL TYPE UNLINK UNSUBSCRIBE UNWATCH WAIT WAITAOF "
    "WATCH XACK XADD XAUTOCLAIM XCLAIM XDEL XGROUP XINFO XLEN XPENDING XRANGE XREAD XREADGROUP XREVRANGE "
    "XSETID XTRIM ZADD ZCARD ZCOUNT ZDIFF ZDIFFSTORE ZINCRBY ZINTER ZINTERCARD ZINTERSTORE ZLEXCOUNT "
    "ZMPOP ZMSCORE ZPOPMAX ZPOPMIN ZRANDMEMBER ZRANGE ZRANGEBYLEX ZRANGEBYSCORE ZRANGESTORE ZRANK ZREM "
    "ZREMRANGEBYLEX ZREMRANGEBYRANK ZREMRANGEBYSCORE ZREVRANGE ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK "
    "ZSCAN ZSCORE ZUNION ZUNIONSTORE "
)
_SUBCOMMAND_NAMES = (
    "ACL|CAT ACL|DELUSER ACL|DRYRUN ACL|GENPASS ACL|GETUSER ACL|HELP ACL|LIST ACL|LOAD ACL|LOG ACL|SAVE "
    "ACL|SETUSER ACL|USERS ACL|WHOAMI CLIENT|CACHING CLIENT|GETNAME CLIENT|GETREDIR CLIENT|HELP CLIENT|ID "
    "CLIENT|INFO CLIENT|KILL CLIENT|LIST CLIENT|NO-EVICT CLIENT|NO-TOUCH CLIENT|PAUSE CLIENT|REPLY "
    "CLIENT|SETINFO "
    "CLIENT|SETNAME CLIENT|TRACKING CLIENT|TRACKINGINFO CLIENT|UNBLOCK CLIENT|UNPAUSE CLUSTER|ADDSLOTS "
    "CLUSTER|ADDSLOTSRANGE CLUSTER|BUMPEPOCH CLUSTER|COUNT-FAILURE-REPORTS CLUSTER|COUNTKEYSINSLOT "
    "CLUSTER|DELSLOTS CLUSTER|DELSLOTSRANGE CLUSTER|FAILOVER CLUSTER|FLUSHSLOTS CLUSTER|FORGET "
    "CLUSTER|GETKEYSINSLOT CLUSTER|HELP CLUSTER|INFO CLUSTER|KEYSLOT CLUSTER|LINKS CLUSTER|MEET "
    "CLUSTER|MYID CLUSTER|MYSHARDID CLUSTER|NODES CLUSTER|REPLICAS CLUSTER|REPLICATE CLUSTER|RESET "
    "CLUSTER|SAVECONFIG CLUSTER|SET-CONFIG-EPOCH CLUSTER|SETSLOT CLUSTER|SHARDS CLUSTER|SLAVES "
    "CLUSTER|SLOTS COMMAND|COUNT COMMAND|DOCS COMMAND|GETKEYS COMMAND|GETKEYSANDFLAGS COMMAND|HELP "
    "COMMAND|INFO COMMAND|LIST CONFIG|GET CONFIG|HELP CONFIG|RESETSTAT CONFIG|REWRITE CONFIG|SET "
    "FUNCTION|DELETE FUNCTION|DUMP FUNCTION|FLUSH FUNCTION|HELP FUNCTION|KILL FUNCTION|LIST FUNCTION|LOAD "
    "FUNCTION|RESTORE FUNCTION|STATS LATENCY|DOCTOR LATENCY|GRAPH LATENCY|HELP LATENCY|HISTOGRAM "
    "LATENCY|HISTORY LATENCY|LATEST LATENCY|RESET MEMORY|DOCTOR MEMORY|HELP MEMORY|MALLOC-STATS "
    "MEMORY|PURGE MEMORY|STATS MEMORY|USAGE MODULE|HELP MODULE|LIST MODULE|LOAD MODULE|LOADEX "
    "MODULE|UNLOAD OBJECT|ENCODING OBJECT|FREQ OBJECT|HELP OBJECT|IDLETIME OBJECT|REFCOUNT "
    "PUBSUB|CHANNELS PUBSUB|HELP PUBSUB|NUMPAT PUBSUB|NUMSUB PUBSUB|SHARDCHANNELS PUBSUB|SHARDNUMSUB "
    "SCRIPT|DEBUG SCRIPT|EXISTS SCRIPT|FLUSH SCRIPT|HELP SCRIPT|KILL SCRIPT|LOAD SLOWLOG|GET SLOWLOG|HELP "
    "SLOWLOG|LEN SLOWLOG|RESET XGROUP|CREATE XGROUP|CREATECONSUMER XGROUP|DELCONSUMER XGROUP|DESTROY "
    "XGROUP|HELP XGROUP|SETID XINFO|CONSUMERS XINFO|GROUPS XINFO|HELP XINFO|STREAM "
)

COMMANDS = frozenset(_COMMAND_NAMES.split())  # redis-server 7.0 COMMAND LIST, and a few newer commands
SUBCOMMANDS = frozenset(_SUBCOMMAND_NAMES.split())

# Commands whose first argument is a subcommand word kept in db.query.text ("CONFIG GET ?").
CONTAINERS = frozenset(s.partition("|")[0] for s in SUBCOMMANDS)
# Commands whose numeric first argument is kept (a database index, a protocol version): never a secret.
NUMBERED = frozenset(("SELECT", "HELLO"))
SUBSCRIBE = frozenset(("SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"))
UNSUBSCRIBE = frozenset(("UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"))
SUBSCRIPTIONS = SUBSCRIBE | UNSUBSCRIBE
MESSAGES = frozenset(("message", "pmessage", "smessage"))  # RESP2 pub/sub deliveries (not replies)
# The only reply text a frame keeps: statuses acted on, and first words naming a message kind.
STATUS_WORDS = frozenset(("OK", "QUEUED", "PONG", "RESET"))
PUSH_WORDS = MESSAGES | {s.lower() for s in SUBSCRIPTIONS} | {"pong", "invalidate"}
REPLY_ON, REPLY_OFF, REPLY_SKIP = 1, 0, 2  # CLIENT REPLY ON|OFF|SKIP, kept in Frame.number
REPLY_MODES = {"ON": REPLY_ON, "OFF": REPLY_OFF, "SKIP": REPLY_SKIP}
OTHER = "_OTHER"  # the name of a command this parser does not know: keeps db.operation.name bounded


class Frame(NamedTuple):
    """One request (command) or one reply, reduced to what pairing and the record need.

    Nothing of an argument is kept but a known subcommand word and SELECT's/HELLO's number: keys,
    values and credentials (AUTH, HELLO ... AUTH) never leave the parser.
    """

    kind: int  # K_COMMAND / K_EMPTY for requests; the reply's type byte for responses
    name: str = ""  # command (upper-cased, <= NAME_MAX) | error prefix | simple string | first word
    sub: str = ""  # request: a known subcommand word ("GET" of CONFIG GET), upper-cased
    elements: int = 0  # request: arguments after the command; reply: aggregate elements (-1: null)
    number: int = -1  # request: SELECT/HELLO's number, CLIENT REPLY's mode; reply: the (last) integer


@dataclass(slots=True)
class Exchange:
    """A command and its reply (for (P|S)SUBSCRIBE: every confirmation of it)."""

    command: str
    sub: str
    args: int
    start_ns: int
    end_ns: int
    position: int = 0  # byte position of the command's first byte
    namespace: str = "0"
    error: str = ""  # the error prefix ("ERR", "WRONGTYPE", "MOVED"), "" on success
    reply: int = 0  # the reply's type byte
    truncated: bool = False
    degraded: bool = False


@dataclass(slots=True)
class Partial:
    """A message parsed in pieces (Skip): where its parse resumes, and what is known of it so far."""

    rem: list[int]  # elements still to read per open aggregate, innermost last
    attr: list[bool]  # whether each open aggregate is an attribute (its elements prefix a value)
    kind: int
    name: str
    sub: str
    count: int
    number: int
    idx: int  # elements of the top-level aggregate read so far


@dataclass(slots=True)
class Subscribing:
    """The confirmations a (P|S)(UN)SUBSCRIBE at the head of the queue has had so far."""

    position: int
    left: int  # confirmations still expected; -1: every subscription (UNSUBSCRIBE without channels)
    end_ns: int = 0
    seen: int = 0
    truncated: bool = False


@dataclass(slots=True)
class State:
    db: str = "0"
    resp3: bool = False  # HELLO 3 answered
    subscribed: bool = False  # RESP2: arrays "message"/"pmessage"/"smessage" are deliveries
    multi: bool = False  # between MULTI and EXEC/DISCARD
    monitor: bool = False  # MONITOR answered: the server streams one status line per command it runs
    replies_off: bool = False  # CLIENT REPLY OFF: commands go unanswered until CLIENT REPLY ON
    skip_next: bool = False  # CLIENT REPLY SKIP: the next command goes unanswered
    multi_db: str = ""  # a SELECT queued in the transaction: the database after EXEC
    paired: int = 0  # exchanges made on this connection
    pushes: int = 0  # out-of-band messages seen (pub/sub deliveries, invalidations): not exchanges
    desynced: bool = False  # bytes were lost: the next exchange is degraded
    eof: bool = False
    unmatched: int = 0  # frames dropped unpaired since take_unmatched
    partial: list[Partial | None] = field(default_factory=lambda: [None, None])  # [request, response]
    subscribing: Subscribing | None = None
