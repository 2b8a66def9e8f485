from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNKNOWN: _ClassVar[Role]
    ROLE_CLIENT: _ClassVar[Role]
    ROLE_SERVER: _ClassVar[Role]

class Io(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IO_SEND: _ClassVar[Io]
    IO_RECV: _ClassVar[Io]

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_SYSCALL: _ClassVar[Source]
    SOURCE_TLS: _ClassVar[Source]
    SOURCE_SENDFILE: _ClassVar[Source]
    SOURCE_PCAP: _ClassVar[Source]
ROLE_UNKNOWN: Role
ROLE_CLIENT: Role
ROLE_SERVER: Role
IO_SEND: Io
IO_RECV: Io
SOURCE_SYSCALL: Source
SOURCE_TLS: Source
SOURCE_SENDFILE: Source
SOURCE_PCAP: Source

class Endpoint(_message.Message):
    __slots__ = ("ip", "port")
    IP_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ip: str
    port: int
    def __init__(self, ip: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("conn_id", "local", "remote", "role", "role_inferred", "pid", "process", "node", "container_id", "executable", "service", "k8s_pod", "k8s_namespace", "k8s_container")
    CONN_ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ROLE_INFERRED_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_FIELD_NUMBER: _ClassVar[int]
    K8S_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    K8S_CONTAINER_FIELD_NUMBER: _ClassVar[int]
    conn_id: str
    local: Endpoint
    remote: Endpoint
    role: Role
    role_inferred: bool
    pid: int
    process: str
    node: str
    container_id: str
    executable: str
    service: str
    k8s_pod: str
    k8s_namespace: str
    k8s_container: str
    def __init__(self, conn_id: _Optional[str] = ..., local: _Optional[_Union[Endpoint, _Mapping]] = ..., remote: _Optional[_Union[Endpoint, _Mapping]] = ..., role: _Optional[_Union[Role, str]] = ..., role_inferred: bool = ..., pid: _Optional[int] = ..., process: _Optional[str] = ..., node: _Optional[str] = ..., container_id: _Optional[str] = ..., executable: _Optional[str] = ..., service: _Optional[str] = ..., k8s_pod: _Optional[str] = ..., k8s_namespace: _Optional[str] = ..., k8s_container: _Optional[str] = ...) -> None: ...

class Fragment(_message.Message):
    __slots__ = ("io", "position", "length", "data", "ts_ns", "tid", "source")
    IO_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    io: Io
    position: int
    length: int
    data: bytes
    ts_ns: int
    tid: int
    source: Source
    def __init__(self, io: _Optional[_Union[Io, str]] = ..., position: _Optional[int] = ..., length: _Optional[int] = ..., data: _Optional[bytes] = ..., ts_ns: _Optional[int] = ..., tid: _Optional[int] = ..., source: _Optional[_Union[Source, str]] = ...) -> None: ...

class Closed(_message.Message):
    __slots__ = ("ts_ns", "send_bytes", "recv_bytes")
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    SEND_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECV_BYTES_FIELD_NUMBER: _ClassVar[int]
    ts_ns: int
    send_bytes: int
    recv_bytes: int
    def __init__(self, ts_ns: _Optional[int] = ..., send_bytes: _Optional[int] = ..., recv_bytes: _Optional[int] = ...) -> None: ...

class FragmentBatch(_message.Message):
    __slots__ = ("schema_version", "connection", "fragments", "closed")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    connection: Connection
    fragments: _containers.RepeatedCompositeFieldContainer[Fragment]
    closed: Closed
    def __init__(self, schema_version: _Optional[int] = ..., connection: _Optional[_Union[Connection, _Mapping]] = ..., fragments: _Optional[_Iterable[_Union[Fragment, _Mapping]]] = ..., closed: _Optional[_Union[Closed, _Mapping]] = ...) -> None: ...
