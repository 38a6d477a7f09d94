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
    /// The program for the first instruction; `None` for probes that only need the returns.
    pub entry_program: Option<&'static str>,
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
    entry_program: Some(agent_common::programs::HTTP_SERVER_ENTRY),
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
    entry_program: Some(agent_common::programs::HTTP_CLIENT_ENTRY),
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

pub const G_PARENT_GOID: Field = Field {
    type_name: "runtime.g",
    field: "parentGoid",
    required: true,
};

/// Goroutine lineage: `runtime.newproc1` creates every goroutine and returns it, with the
/// id of the goroutine that started it recorded; the parent's request context is copied to
/// the child there, so calls from goroutines a handler started (at any depth) belong to the
/// handler's request. Returns only: one trap per goroutine.
pub const GOROUTINE_LINEAGE: FunctionProbe = FunctionProbe {
    name: "goroutine lineage",
    symbol: "runtime.newproc1",
    entry_program: None,
    return_program: Some(agent_common::programs::NEWPROC_RETURN),
    fields: &[G_GOID, G_PARENT_GOID],
    makes_spans: false,
};

/// Panics: `runtime.gopanic` fires only when something panics. A handler that panics may
/// never return from `ServeHTTP` (net/http recovers and closes the connection), so its
/// request is reported from here, as failed, unless it returns after all.
pub const PANICS: FunctionProbe = FunctionProbe {
    name: "panics",
    symbol: "runtime.gopanic",
    entry_program: Some(agent_common::programs::GOPANIC_ENTRY),
    return_program: None,
    fields: &[],
    makes_spans: false,
};

/// Every probe of the catalog, in the order `inspect` reports them.
pub const ALL: &[&FunctionProbe] = &[&HTTP_SERVER, &HTTP_CLIENT, &GOROUTINE_LINEAGE, &PANICS];
