//! The probe catalog: what skyhook instruments, as data. One table per instrumented library;
//! `attach` reads these and nothing else decides where probes go.

/// A struct field a probe reads, located by DWARF when the binary has it, else by the
/// offsets database (`gobin::offsets`) for the binary's exact Go release.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Go type name with its import path, as DWARF spells it: `net/http.Request`.
    pub type_name: &'static str,
    pub field: &'static str,
    /// A missing required field means the probe is not attached; a missing optional one
    /// only loses that datum.
    pub required: bool,
}

/// One instrumented Go function: an entry probe and a probe on each of its RET sites.
#[derive(Clone, Copy, Debug)]
pub struct FunctionProbe {
    /// Short name for logs and status: `net/http server`.
    pub name: &'static str,
    /// Go symbol, as in the ELF symbol table and pclntab.
    pub symbol: &'static str,
    pub entry_program: &'static str,
    /// The program for every RET site; `None` for probes that only need the entry.
    pub return_program: Option<&'static str>,
    pub fields: &'static [Field],
    /// Whether the probe makes spans. A process is traceable when at least one such probe
    /// attaches; the others (goroutine lineage) only enrich what those report.
    pub makes_spans: bool,
}

pub const G_GOID: Field = Field {
    type_name: "runtime.g",
    field: "goid",
    required: true,
};
pub const REQUEST_METHOD: Field = Field {
    type_name: "net/http.Request",
    field: "Method",
    required: true,
};
pub const REQUEST_URL: Field = Field {
    type_name: "net/http.Request",
    field: "URL",
    required: true,
};
pub const REQUEST_HOST: Field = Field {
    type_name: "net/http.Request",
    field: "Host",
    required: true,
};
pub const URL_PATH: Field = Field {
    type_name: "net/url.URL",
    field: "Path",
    required: true,
};
pub const URL_HOST: Field = Field {
    type_name: "net/url.URL",
    field: "Host",
    required: true,
};
pub const RESPONSE_STATUS_CODE: Field = Field {
    type_name: "net/http.Response",
    field: "StatusCode",
    required: false,
};
pub const REQUEST_PROTO_MAJOR: Field = Field {
    type_name: "net/http.Request",
    field: "ProtoMajor",
    required: false,
};
pub const RESPONSE_STATUS: Field = Field {
    type_name: "net/http.response",
    field: "status",
    required: false,
};

/// net/http server: one Entry span per request handled by `serverHandler.ServeHTTP`.
pub const HTTP_SERVER: FunctionProbe = FunctionProbe {
    name: "net/http server",
    symbol: "net/http.serverHandler.ServeHTTP",
    entry_program: agent_common::programs::HTTP_SERVER_ENTRY,
    return_program: Some(agent_common::programs::HTTP_SERVER_RETURN),
    fields: &[
        G_GOID,
        REQUEST_METHOD,
        REQUEST_URL,
        REQUEST_HOST,
        URL_PATH,
        REQUEST_PROTO_MAJOR,
        RESPONSE_STATUS,
    ],
    makes_spans: true,
};

/// net/http client: one Exit span per round trip of `http.Transport` (every `http.Client`
/// call, redirects and retries included, each its own round trip).
pub const HTTP_CLIENT: FunctionProbe = FunctionProbe {
    name: "net/http client",
    symbol: "net/http.(*Transport).roundTrip",
    entry_program: agent_common::programs::HTTP_CLIENT_ENTRY,
    return_program: Some(agent_common::programs::HTTP_CLIENT_RETURN),
    fields: &[
        G_GOID,
        REQUEST_METHOD,
        REQUEST_URL,
        URL_PATH,
        URL_HOST,
        RESPONSE_STATUS_CODE,
    ],
    makes_spans: true,
};

/// Goroutine lineage: `runtime.newproc1` creates every goroutine; its caller's request
/// context is copied to the new one, so calls made from goroutines a handler started (at any
/// depth) belong to the handler's request.
pub const GOROUTINE_LINEAGE: FunctionProbe = FunctionProbe {
    name: "goroutine lineage",
    symbol: "runtime.newproc1",
    entry_program: agent_common::programs::NEWPROC_ENTRY,
    return_program: Some(agent_common::programs::NEWPROC_RETURN),
    fields: &[],
    makes_spans: false,
};

/// Goroutine exit: `runtime.goexit1` runs on every goroutine that ends. A goroutine that
/// ends inside `ServeHTTP` never returned from it (its handler panicked and net/http
/// recovered, or it called `runtime.Goexit`): its request is reported as failed then, and
/// the goroutine's request context and client state are freed.
pub const GOROUTINE_EXIT: FunctionProbe = FunctionProbe {
    name: "goroutine exit",
    symbol: "runtime.goexit1",
    entry_program: agent_common::programs::GOEXIT_ENTRY,
    return_program: None,
    fields: &[],
    makes_spans: false,
};

/// Every probe of the catalog, in the order `inspect` reports them.
pub const ALL: &[&FunctionProbe] = &[
    &HTTP_SERVER,
    &HTTP_CLIENT,
    &GOROUTINE_LINEAGE,
    &GOROUTINE_EXIT,
];
