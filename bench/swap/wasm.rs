//! Modules for the swap benchmark: the add-header filter with a version tag, and a generated
//! proxy-wasm module of a chosen size, to time a reload that compiles.

/// `bytes` (a wasm module) with a custom section appended: same code, different SHA-256.
pub fn tagged(module: &[u8], tag: &str) -> Vec<u8> {
    let mut payload = name("wasmgate-swapbench");
    payload.extend_from_slice(tag.as_bytes());
    let mut out = module.to_vec();
    out.extend(section(0, &payload));
    out
}

/// A proxy-wasm module (ABI 0.2.1) that sets `x-version: VERSION` on the request and on the
/// response, padded with uncalled functions of plain arithmetic and loops until it is at least
/// `size` bytes. `salt` changes the padding, so that every salt is a module never compiled
/// before.
pub fn version_module(version: &str, size: usize, salt: u32) -> Vec<u8> {
    const I32: u8 = 0x7f;
    let func_type = |params: &[u8], results: &[u8]| {
        let mut t = vec![0x60];
        t.extend(vec_of(params.iter().map(|p| vec![*p])));
        t.extend(vec_of(results.iter().map(|r| vec![*r])));
        t
    };
    let types = vec_of([
        func_type(&[I32; 5], &[I32]), // 0: proxy_replace_header_map_value
        func_type(&[I32], &[I32]),    // 1: malloc, padding
        func_type(&[I32; 2], &[]),    // 2: proxy_on_context_create
        func_type(&[I32; 2], &[I32]), // 3: proxy_on_vm_start, proxy_on_configure
        func_type(&[I32; 3], &[I32]), // 4: the headers callbacks
        func_type(&[], &[]),          // 5: the ABI marker
    ]);
    let mut import = name("env");
    import.extend(name("proxy_replace_header_map_value"));
    import.extend([0x00, 0x00]); // a function of type 0
    let imports = vec_of([import]);

    let set_header = |map: i32| {
        let mut code = Vec::new();
        for arg in [map, 1024, 9, 1040, version.len() as i32] {
            code.push(0x41);
            code.extend(sleb(arg));
        }
        code.extend([0x10, 0x00, 0x1a]); // call 0, drop
        code.extend([0x41, 0x00, 0x0b]); // i32.const 0 (Continue), end
        body(&[], &code)
    };
    // Functions 1..=7, then the padding from 8.
    let mut bodies = vec![
        // malloc: a bump allocator over global 0.
        body(
            &[(1, I32)],
            &[
                0x23, 0x00, 0x21, 0x01, 0x23, 0x00, 0x20, 0x00, 0x6a, 0x24, 0x00, 0x20, 0x01, 0x0b,
            ],
        ),
        body(&[], &[0x0b]),             // proxy_on_context_create
        body(&[], &[0x41, 0x01, 0x0b]), // proxy_on_vm_start: true
        body(&[], &[0x41, 0x01, 0x0b]), // proxy_on_configure: true
        set_header(0),                  // proxy_on_request_headers
        set_header(2),                  // proxy_on_response_headers
        body(&[], &[0x0b]),             // proxy_abi_version_0_2_1
    ];
    let mut func_types: Vec<u32> = vec![1, 2, 3, 3, 4, 4, 5];
    let mut total: usize = bodies.iter().map(Vec::len).sum();
    let mut n: u32 = 0;
    while total < size {
        let padding = padding(salt, n);
        total += padding.len();
        bodies.push(padding);
        func_types.push(1);
        n += 1;
    }
    let functions = vec_of(func_types.iter().map(|t| uleb(*t)));
    let memory = vec_of([vec![0x00, 0x02]]); // min 2 pages, no max
    let mut global = vec![I32, 0x01, 0x41];
    global.extend(sleb(65536));
    global.push(0x0b);
    let globals = vec_of([global]);
    let export = |n: &str, kind: u8, index: u32| {
        let mut e = name(n);
        e.push(kind);
        e.extend(uleb(index));
        e
    };
    let exports = vec_of([
        export("memory", 0x02, 0),
        export("malloc", 0x00, 1),
        export("proxy_on_context_create", 0x00, 2),
        export("proxy_on_vm_start", 0x00, 3),
        export("proxy_on_configure", 0x00, 4),
        export("proxy_on_request_headers", 0x00, 5),
        export("proxy_on_response_headers", 0x00, 6),
        export("proxy_abi_version_0_2_1", 0x00, 7),
    ]);
    let code = vec_of(bodies);
    let data = |offset: i32, bytes: &[u8]| {
        let mut d = vec![0x00, 0x41];
        d.extend(sleb(offset));
        d.push(0x0b);
        d.extend(uleb(bytes.len() as u32));
        d.extend_from_slice(bytes);
        d
    };
    let datas = vec_of([data(1024, b"x-version"), data(1040, version.as_bytes())]);

    let mut module = b"\0asm\x01\0\0\0".to_vec();
    for (id, payload) in [
        (1, types),
        (2, imports),
        (3, functions),
        (5, memory),
        (6, globals),
        (7, exports),
        (10, code),
        (11, datas),
    ] {
        module.extend(section(id, &payload));
    }
    module
}

/// An uncalled `(i32) -> i32` function: a chain of arithmetic, then a countdown loop.
fn padding(salt: u32, n: u32) -> Vec<u8> {
    let mut code = vec![0x20, 0x00]; // local.get 0
    for k in 0..24u32 {
        let c = (salt.wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503) ^ k) as i32;
        code.push(0x41);
        code.extend(sleb(c));
        code.push([0x6a, 0x6c, 0x73][k as usize % 3]); // i32.add, i32.mul, i32.xor
    }
    code.extend([0x21, 0x00]); // local.set 0
    // loop: local.get 0; i32.const 7; i32.sub; local.tee 0; i32.const 0; i32.gt_s; br_if 0
    code.extend([
        0x03, 0x40, 0x20, 0x00, 0x41, 0x07, 0x6b, 0x22, 0x00, 0x41, 0x00, 0x4a, 0x0d, 0x00, 0x0b,
    ]);
    code.extend([0x20, 0x00, 0x0b]); // local.get 0, end
    body(&[], &code)
}

fn body(locals: &[(u32, u8)], code: &[u8]) -> Vec<u8> {
    let mut b = vec_of(locals.iter().map(|(count, ty)| {
        let mut l = uleb(*count);
        l.push(*ty);
        l
    }));
    b.extend_from_slice(code);
    let mut out = uleb(b.len() as u32);
    out.extend(b);
    out
}

fn section(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(uleb(payload.len() as u32));
    out.extend_from_slice(payload);
    out
}

fn vec_of(items: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let items: Vec<Vec<u8>> = items.into_iter().collect();
    let mut out = uleb(items.len() as u32);
    for item in items {
        out.extend(item);
    }
    out
}

fn name(s: &str) -> Vec<u8> {
    let mut out = uleb(s.len() as u32);
    out.extend_from_slice(s.as_bytes());
    out
}

fn uleb(mut v: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn sleb(mut v: i32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}
