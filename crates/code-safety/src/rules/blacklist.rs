//! Bandit's call black-list (`B3xx`) and import black-list (`B4xx`), with bandit's qualified
//! names and messages.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::finding::Rule;
use crate::rules::catalog as c;

/// One black-list entry: the rule and the qualified names it matches.
pub(crate) struct Entry {
    pub(crate) rule: &'static Rule,
    pub(crate) qualnames: &'static [&'static str],
    pub(crate) message: &'static str,
}

const XML_CALL: &str = "Using {name} to parse untrusted XML data is known to be vulnerable to XML attacks. Replace {name} with its defusedxml equivalent function or make sure defusedxml.defuse_stdlib() is called";
const XML_IMPORT: &str = "Using {name} to parse untrusted XML data is known to be vulnerable to XML attacks. Replace {name} with the equivalent defusedxml package, or make sure defusedxml.defuse_stdlib() is called.";

/// Calls, in bandit's order.
pub(crate) static CALLS: &[Entry] = &[
    Entry {
        rule: &c::B301,
        qualnames: &[
            "pickle.loads",
            "pickle.load",
            "pickle.Unpickler",
            "dill.loads",
            "dill.load",
            "dill.Unpickler",
            "shelve.open",
            "shelve.DbfilenameShelf",
            "jsonpickle.decode",
            "jsonpickle.unpickler.decode",
            "jsonpickle.unpickler.Unpickler",
            "pandas.read_pickle",
        ],
        message: "Pickle and modules that wrap it can be unsafe when used to deserialize untrusted data, possible security issue.",
    },
    Entry {
        rule: &c::B302,
        qualnames: &["marshal.load", "marshal.loads"],
        message: "Deserialization with the marshal module is possibly dangerous.",
    },
    Entry {
        rule: &c::B303,
        qualnames: &[
            "Crypto.Hash.MD2.new",
            "Crypto.Hash.MD4.new",
            "Crypto.Hash.MD5.new",
            "Crypto.Hash.SHA.new",
            "Cryptodome.Hash.MD2.new",
            "Cryptodome.Hash.MD4.new",
            "Cryptodome.Hash.MD5.new",
            "Cryptodome.Hash.SHA.new",
            "cryptography.hazmat.primitives.hashes.MD5",
            "cryptography.hazmat.primitives.hashes.SHA1",
        ],
        message: "Use of insecure MD2, MD4, MD5, or SHA1 hash function.",
    },
    Entry {
        rule: &c::B304,
        qualnames: &[
            "Crypto.Cipher.ARC2.new",
            "Crypto.Cipher.ARC4.new",
            "Crypto.Cipher.Blowfish.new",
            "Crypto.Cipher.DES.new",
            "Crypto.Cipher.XOR.new",
            "Cryptodome.Cipher.ARC2.new",
            "Cryptodome.Cipher.ARC4.new",
            "Cryptodome.Cipher.Blowfish.new",
            "Cryptodome.Cipher.DES.new",
            "Cryptodome.Cipher.XOR.new",
            "cryptography.hazmat.primitives.ciphers.algorithms.ARC4",
            "cryptography.hazmat.primitives.ciphers.algorithms.Blowfish",
            "cryptography.hazmat.primitives.ciphers.algorithms.CAST5",
            "cryptography.hazmat.primitives.ciphers.algorithms.IDEA",
            "cryptography.hazmat.primitives.ciphers.algorithms.SEED",
            "cryptography.hazmat.primitives.ciphers.algorithms.TripleDES",
        ],
        message: "Use of insecure cipher {name}. Replace with a known secure cipher such as AES.",
    },
    Entry {
        rule: &c::B305,
        qualnames: &["cryptography.hazmat.primitives.ciphers.modes.ECB"],
        message: "Use of insecure cipher mode {name}.",
    },
    Entry {
        rule: &c::B306,
        qualnames: &["tempfile.mktemp"],
        message: "Use of insecure and deprecated function (mktemp).",
    },
    Entry {
        rule: &c::B307,
        qualnames: &["eval"],
        message: "Use of possibly insecure function - consider using safer ast.literal_eval.",
    },
    Entry {
        rule: &c::B308,
        qualnames: &["django.utils.safestring.mark_safe"],
        message: "Use of mark_safe() may expose cross-site scripting vulnerabilities and should be reviewed.",
    },
    Entry {
        rule: &c::B310,
        qualnames: &[
            "urllib.request.urlopen",
            "urllib.request.urlretrieve",
            "urllib.request.URLopener",
            "urllib.request.FancyURLopener",
            "six.moves.urllib.request.urlopen",
            "six.moves.urllib.request.urlretrieve",
            "six.moves.urllib.request.URLopener",
            "six.moves.urllib.request.FancyURLopener",
        ],
        message: "Audit url open for permitted schemes. Allowing use of file:/ or custom schemes is often unexpected.",
    },
    Entry {
        rule: &c::B311,
        qualnames: &[
            "random.Random",
            "random.random",
            "random.randrange",
            "random.randint",
            "random.choice",
            "random.choices",
            "random.uniform",
            "random.triangular",
            "random.randbytes",
            "random.sample",
            "random.getrandbits",
        ],
        message: "Standard pseudo-random generators are not suitable for security/cryptographic purposes.",
    },
    Entry {
        rule: &c::B312,
        qualnames: &["telnetlib.Telnet"],
        message: "Telnet-related functions are being called. Telnet is considered insecure. Use SSH or some other encrypted protocol.",
    },
    Entry {
        rule: &c::B313,
        qualnames: &[
            "xml.etree.cElementTree.parse",
            "xml.etree.cElementTree.iterparse",
            "xml.etree.cElementTree.fromstring",
            "xml.etree.cElementTree.XMLParser",
        ],
        message: XML_CALL,
    },
    Entry {
        rule: &c::B314,
        qualnames: &[
            "xml.etree.ElementTree.parse",
            "xml.etree.ElementTree.iterparse",
            "xml.etree.ElementTree.fromstring",
            "xml.etree.ElementTree.XMLParser",
        ],
        message: XML_CALL,
    },
    Entry {
        rule: &c::B315,
        qualnames: &["xml.sax.expatreader.create_parser"],
        message: XML_CALL,
    },
    Entry {
        rule: &c::B316,
        qualnames: &[
            "xml.dom.expatbuilder.parse",
            "xml.dom.expatbuilder.parseString",
        ],
        message: XML_CALL,
    },
    Entry {
        rule: &c::B317,
        qualnames: &[
            "xml.sax.parse",
            "xml.sax.parseString",
            "xml.sax.make_parser",
        ],
        message: XML_CALL,
    },
    Entry {
        rule: &c::B318,
        qualnames: &["xml.dom.minidom.parse", "xml.dom.minidom.parseString"],
        message: XML_CALL,
    },
    Entry {
        rule: &c::B319,
        qualnames: &["xml.dom.pulldom.parse", "xml.dom.pulldom.parseString"],
        message: XML_CALL,
    },
    Entry {
        rule: &c::B321,
        qualnames: &["ftplib.FTP"],
        message: "FTP-related functions are being called. FTP is considered insecure. Use SSH/SFTP/SCP or some other encrypted protocol.",
    },
    Entry {
        rule: &c::B323,
        qualnames: &["ssl._create_unverified_context"],
        message: "By default, Python will create a secure, verified ssl context for use in such classes as HTTPSConnection. However, it still allows using an insecure context via the _create_unverified_context that  reverts to the previous behavior that does not validate certificates or perform hostname checks.",
    },
];

/// Imports, in bandit's order. Bandit also checks these against call names.
pub(crate) static IMPORTS: &[Entry] = &[
    Entry {
        rule: &c::B401,
        qualnames: &["telnetlib"],
        message: "A telnet-related module is being imported.  Telnet is considered insecure. Use SSH or some other encrypted protocol.",
    },
    Entry {
        rule: &c::B402,
        qualnames: &["ftplib"],
        message: "A FTP-related module is being imported.  FTP is considered insecure. Use SSH/SFTP/SCP or some other encrypted protocol.",
    },
    Entry {
        rule: &c::B403,
        qualnames: &["pickle", "cPickle", "dill", "shelve"],
        message: "Consider possible security implications associated with {name} module.",
    },
    Entry {
        rule: &c::B404,
        qualnames: &["subprocess"],
        message: "Consider possible security implications associated with the subprocess module.",
    },
    Entry {
        rule: &c::B405,
        qualnames: &["xml.etree.cElementTree", "xml.etree.ElementTree"],
        message: XML_IMPORT,
    },
    Entry {
        rule: &c::B406,
        qualnames: &["xml.sax"],
        message: XML_IMPORT,
    },
    Entry {
        rule: &c::B407,
        qualnames: &["xml.dom.expatbuilder"],
        message: XML_IMPORT,
    },
    Entry {
        rule: &c::B408,
        qualnames: &["xml.dom.minidom"],
        message: XML_IMPORT,
    },
    Entry {
        rule: &c::B409,
        qualnames: &["xml.dom.pulldom"],
        message: XML_IMPORT,
    },
    Entry {
        rule: &c::B411,
        qualnames: &["xmlrpc"],
        message: "Using {name} to parse untrusted XML data is known to be vulnerable to XML attacks. Use defusedxml.xmlrpc.monkey_patch() function to monkey-patch xmlrpclib and mitigate XML vulnerabilities.",
    },
    Entry {
        rule: &c::B412,
        qualnames: &[
            "wsgiref.handlers.CGIHandler",
            "twisted.web.twcgi.CGIScript",
            "twisted.web.twcgi.CGIDirectory",
        ],
        message: "Consider possible security implications associated with {name} module.",
    },
    Entry {
        rule: &c::B413,
        qualnames: &[
            "Crypto.Cipher",
            "Crypto.Hash",
            "Crypto.IO",
            "Crypto.Protocol",
            "Crypto.PublicKey",
            "Crypto.Random",
            "Crypto.Signature",
            "Crypto.Util",
        ],
        message: "The pyCrypto library and its module {name} are no longer actively maintained and have been deprecated. Consider using pyca/cryptography library.",
    },
    Entry {
        rule: &c::B415,
        qualnames: &["pyghmi"],
        message: "An IPMI-related module is being imported. IPMI is considered insecure. Use an encrypted protocol.",
    },
];

/// The black-list entry a call with this (resolved) name hits, as bandit matches calls: exact
/// equality against the call list, then the import list.
pub(crate) fn match_call(name: &str) -> Option<(&'static Entry, String)> {
    static BY_NAME: LazyLock<HashMap<&'static str, &'static Entry>> = LazyLock::new(|| {
        let mut map = HashMap::new();
        for e in CALLS.iter().chain(IMPORTS) {
            for q in e.qualnames {
                map.entry(*q).or_insert(e);
            }
        }
        map
    });
    BY_NAME
        .get(name)
        .map(|e| (*e, e.message.replace("{name}", name)))
}

/// The black-list entry an import hits, as bandit matches imports: `prefix + name` starting
/// with a listed name; `{name}` in the message is the imported name without the prefix.
pub(crate) fn match_import(prefix: &str, names: &[&str]) -> Option<(&'static Entry, String)> {
    for entry in IMPORTS {
        for name in names {
            let full = format!("{prefix}{name}");
            if entry.qualnames.iter().any(|q| full.starts_with(q)) {
                return Some((entry, entry.message.replace("{name}", name)));
            }
        }
    }
    None
}
