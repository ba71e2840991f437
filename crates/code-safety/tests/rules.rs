//! Every rule fires on a positive fixture and stays quiet on a negative one.

use aetherflow_code_safety::{Policy, scan_source};

fn permissive() -> Policy {
    let mut p = Policy::default();
    p.imports.allow = vec!["*".into()];
    p.imports.allow_relative = true;
    p
}

fn ids(src: &str) -> Vec<&'static str> {
    scan_source("fixture.py", src, &permissive())
        .findings
        .iter()
        .map(|f| f.rule.id)
        .collect()
}

/// (rule, code that must trigger it, similar code that must not).
const CASES: &[(&str, &str, &str)] = &[
    (
        "B101",
        "assert x > 0\n",
        "if not x > 0:\n    raise ValueError(x)\n",
    ),
    ("B102", "exec(code)\n", "executor(code)\n"),
    (
        "B103",
        "import os\nos.chmod('/etc/passwd', 0o777)\n",
        "import os\nos.chmod('/etc/passwd', 0o600)\n",
    ),
    ("B104", "host = '0.0.0.0'\n", "host = '127.0.0.1'\n"),
    (
        "B105",
        "password = 'hunter2'\n",
        "password = get_secret()\n",
    ),
    (
        "B105",
        "if token == 'abc':\n    pass\n",
        "if name == 'abc':\n    pass\n",
    ),
    ("B105", "d = {'password': 'x'}\n", "d = {'user': 'x'}\n"),
    (
        "B106",
        "connect(password='hunter2')\n",
        "connect(password=secret)\n",
    ),
    (
        "B107",
        "def login(user, password='admin'):\n    pass\n",
        "def login(user, password=None):\n    pass\n",
    ),
    (
        "B108",
        "f = open('/tmp/data.txt', 'w')\n",
        "f = open('data.txt', 'w')\n",
    ),
    (
        "B110",
        "try:\n    f()\nexcept Exception:\n    pass\n",
        "try:\n    f()\nexcept ValueError:\n    pass\n",
    ),
    (
        "B112",
        "for x in y:\n    try:\n        f()\n    except:\n        continue\n",
        "for x in y:\n    try:\n        f()\n    except:\n        log()\n        continue\n",
    ),
    (
        "B113",
        "import requests\nrequests.get(url)\n",
        "import requests\nrequests.get(url, timeout=10)\n",
    ),
    (
        "B113",
        "import httpx\nhttpx.get(url, timeout=None)\n",
        "import httpx\nhttpx.get(url, timeout=5)\n",
    ),
    (
        "B201",
        "import flask\napp = flask.Flask(__name__)\napp.run(debug=True)\n",
        "import flask\napp = flask.Flask(__name__)\napp.run(debug=False)\n",
    ),
    (
        "B202",
        "import tarfile\nt = tarfile.open(p)\nt.extractall()\n",
        "import tarfile\nt = tarfile.open(p)\nt.extractall(filter='data')\n",
    ),
    (
        "B301",
        "import pickle\npickle.loads(data)\n",
        "import json\njson.loads(data)\n",
    ),
    (
        "B302",
        "import marshal\nmarshal.loads(data)\n",
        "import json\njson.loads(data)\n",
    ),
    (
        "B303",
        "from Crypto.Hash import MD5\nMD5.new()\n",
        "from Crypto.Hash import SHA256\nSHA256.new()\n",
    ),
    (
        "B304",
        "from Crypto.Cipher import DES\nDES.new(key)\n",
        "from Crypto.Cipher import AES\nAES.new(key)\n",
    ),
    (
        "B305",
        "from cryptography.hazmat.primitives.ciphers import modes\nmodes.ECB()\n",
        "from cryptography.hazmat.primitives.ciphers import modes\nmodes.GCM(iv)\n",
    ),
    (
        "B306",
        "import tempfile\ntempfile.mktemp()\n",
        "import tempfile\ntempfile.mkstemp()\n",
    ),
    (
        "B307",
        "eval(expr)\n",
        "import ast\nast.literal_eval(expr)\n",
    ),
    (
        "B308",
        "from django.utils.safestring import mark_safe\nmark_safe(x)\n",
        "from django.utils.html import escape\nescape(x)\n",
    ),
    (
        "B310",
        "import urllib.request\nurllib.request.urlopen(url)\n",
        "import urllib.parse\nurllib.parse.urlparse(url)\n",
    ),
    (
        "B311",
        "import random\nrandom.randint(1, 6)\n",
        "import secrets\nsecrets.randbelow(6)\n",
    ),
    (
        "B312",
        "import telnetlib\ntelnetlib.Telnet(host)\n",
        "import paramiko\nparamiko.SSHClient()\n",
    ),
    (
        "B313",
        "import xml.etree.cElementTree as ET\nET.parse(f)\n",
        "import defusedxml.cElementTree as ET\nET.parse(f)\n",
    ),
    (
        "B314",
        "import xml.etree.ElementTree as ET\nET.fromstring(s)\n",
        "import defusedxml.ElementTree as ET\nET.fromstring(s)\n",
    ),
    (
        "B315",
        "import xml.sax.expatreader\nxml.sax.expatreader.create_parser()\n",
        "import defusedxml.expatreader\ndefusedxml.expatreader.create_parser()\n",
    ),
    (
        "B316",
        "from xml.dom import expatbuilder\nexpatbuilder.parse(f)\n",
        "from defusedxml import expatbuilder\nexpatbuilder.parse(f)\n",
    ),
    (
        "B317",
        "import xml.sax\nxml.sax.parseString(s, h)\n",
        "import defusedxml.sax\ndefusedxml.sax.parseString(s, h)\n",
    ),
    (
        "B318",
        "from xml.dom import minidom\nminidom.parseString(s)\n",
        "from defusedxml import minidom\nminidom.parseString(s)\n",
    ),
    (
        "B319",
        "from xml.dom import pulldom\npulldom.parseString(s)\n",
        "from defusedxml import pulldom\npulldom.parseString(s)\n",
    ),
    (
        "B321",
        "import ftplib\nftplib.FTP(host)\n",
        "import ftplib\nftplib.FTP_TLS(host)\n",
    ),
    (
        "B323",
        "import ssl\nssl._create_unverified_context()\n",
        "import ssl\nssl.create_default_context()\n",
    ),
    (
        "B324",
        "import hashlib\nhashlib.md5(b'x')\n",
        "import hashlib\nhashlib.md5(b'x', usedforsecurity=False)\n",
    ),
    (
        "B324",
        "import hashlib\nhashlib.new('sha1')\n",
        "import hashlib\nhashlib.new('sha256')\n",
    ),
    ("B401", "import telnetlib\n", "import json\n"),
    (
        "B402",
        "from ftplib import FTP\n",
        "from json import loads\n",
    ),
    ("B403", "import pickle\n", "import json\n"),
    ("B404", "import subprocess\n", "import shlex\n"),
    (
        "B405",
        "import xml.etree.ElementTree\n",
        "import defusedxml.ElementTree\n",
    ),
    ("B406", "import xml.sax\n", "import defusedxml.sax\n"),
    (
        "B407",
        "from xml.dom import expatbuilder\n",
        "from defusedxml import expatbuilder\n",
    ),
    (
        "B408",
        "from xml.dom import minidom\n",
        "from defusedxml import minidom\n",
    ),
    (
        "B409",
        "from xml.dom import pulldom\n",
        "from defusedxml import pulldom\n",
    ),
    (
        "B411",
        "import xmlrpc.client\n",
        "import defusedxml.xmlrpc\n",
    ),
    (
        "B412",
        "from wsgiref.handlers import CGIHandler\n",
        "from wsgiref.handlers import SimpleHandler\n",
    ),
    (
        "B413",
        "from Crypto.Cipher import AES\n",
        "from cryptography.fernet import Fernet\n",
    ),
    ("B415", "import pyghmi\n", "import paramiko\n"),
    (
        "B501",
        "import requests\nrequests.get(url, verify=False, timeout=5)\n",
        "import requests\nrequests.get(url, verify=True, timeout=5)\n",
    ),
    (
        "B502",
        "import ssl\nssl.wrap_socket(s, ssl_version=ssl.PROTOCOL_SSLv3)\n",
        "import ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n",
    ),
    (
        "B503",
        "import ssl\ndef f(v=ssl.PROTOCOL_TLSv1):\n    pass\n",
        "import ssl\ndef f(v=ssl.PROTOCOL_TLS_CLIENT):\n    pass\n",
    ),
    (
        "B504",
        "import ssl\nssl.wrap_socket(s)\n",
        "import ssl\nssl.create_default_context().wrap_socket(s)\n",
    ),
    (
        "B505",
        "from cryptography.hazmat.primitives.asymmetric import rsa\nrsa.generate_private_key(65537, 1024)\n",
        "from cryptography.hazmat.primitives.asymmetric import rsa\nrsa.generate_private_key(65537, 4096)\n",
    ),
    (
        "B505",
        "from cryptography.hazmat.primitives.asymmetric import ec\nec.generate_private_key(ec.SECP192R1)\n",
        "from cryptography.hazmat.primitives.asymmetric import ec\nec.generate_private_key(ec.SECP384R1)\n",
    ),
    (
        "B506",
        "import yaml\nyaml.load(s)\n",
        "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)\n",
    ),
    (
        "B507",
        "import paramiko\nc = paramiko.SSHClient()\nc.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n",
        "import paramiko\nc = paramiko.SSHClient()\nc.set_missing_host_key_policy(paramiko.RejectPolicy())\n",
    ),
    (
        "B508",
        "from pysnmp import hlapi\nhlapi.CommunityData('public', mpModel=0)\n",
        "from pysnmp import hlapi\nhlapi.UsmUserData('u', 'a', 'p')\n",
    ),
    (
        "B509",
        "from pysnmp import hlapi\nhlapi.UsmUserData('u')\n",
        "from pysnmp import hlapi\nhlapi.UsmUserData('u', 'a', 'p')\n",
    ),
    (
        "B601",
        "import paramiko\nclient.exec_command(cmd)\n",
        "import paramiko\nclient.connect(host)\n",
    ),
    (
        "B602",
        "import subprocess\nsubprocess.call(cmd, shell=True)\n",
        "import subprocess\nsubprocess.call(cmd, shell=False)\n",
    ),
    (
        "B603",
        "import subprocess\nsubprocess.run(['ls'])\n",
        "import subprocess\nsubprocess.run(['ls'], shell=True)\n",
    ),
    (
        "B604",
        "spawn(cmd, shell=True)\n",
        "spawn(cmd, shell=False)\n",
    ),
    (
        "B605",
        "import os\nos.system(cmd)\n",
        "import os\nos.path.join(cmd)\n",
    ),
    (
        "B606",
        "import os\nos.execv('/bin/ls', args)\n",
        "import os\nos.getcwd()\n",
    ),
    (
        "B607",
        "import subprocess\nsubprocess.run(['ls', '-l'])\n",
        "import subprocess\nsubprocess.run(['/bin/ls', '-l'])\n",
    ),
    (
        "B608",
        "cur.execute('SELECT * FROM users WHERE id = ' + uid)\n",
        "cur.execute('SELECT * FROM users WHERE id = ?', (uid,))\n",
    ),
    (
        "B608",
        "q = 'DELETE FROM t WHERE id = {}'.format(i)\n",
        "q = 'hello {}'.format(i)\n",
    ),
    (
        "B608",
        "q = f'UPDATE t SET a = {v}'\n",
        "q = f'value is {v}'\n",
    ),
    (
        "B609",
        "import os\nos.system('chmod 700 *')\n",
        "import os\nos.system('chmod 700 file')\n",
    ),
    (
        "B610",
        "User.objects.extra(where=[cond])\n",
        "User.objects.extra(where=['a = 1'])\n",
    ),
    (
        "B611",
        "from django.db.models.expressions import RawSQL\nRawSQL(sql)\n",
        "from django.db.models.expressions import RawSQL\nRawSQL('SELECT 1')\n",
    ),
    (
        "B612",
        "import logging.config\nlogging.config.listen(9999)\n",
        "import logging.config\nlogging.config.listen(9999, verify=check)\n",
    ),
    (
        "B613",
        "x = 1  # \u{202e} reversed\n",
        "x = 1  # plain comment\n",
    ),
    (
        "B614",
        "import torch\ntorch.load(path)\n",
        "import torch\ntorch.load(path, weights_only=True)\n",
    ),
    (
        "B615",
        "import transformers\ntransformers.AutoModel.from_pretrained('org/model')\n",
        "import transformers\ntransformers.AutoModel.from_pretrained('org/model', revision='0123abcd')\n",
    ),
    (
        "B701",
        "import jinja2\njinja2.Environment(loader=l)\n",
        "import jinja2\njinja2.Environment(loader=l, autoescape=True)\n",
    ),
    (
        "B702",
        "from mako.template import Template\nTemplate(text)\n",
        "from string import Template\nTemplate(text)\n",
    ),
    (
        "B703",
        "from django.utils.safestring import mark_safe\ndef f(x):\n    return mark_safe(x)\n",
        "from django.utils.safestring import mark_safe\ndef f():\n    x = '<b>'\n    return mark_safe(x)\n",
    ),
    (
        "B704",
        "import markupsafe\nmarkupsafe.Markup(user)\n",
        "import markupsafe\nmarkupsafe.Markup('<b>ok</b>')\n",
    ),
    ("AF002", "__import__(name)\n", "__import__('json')\n"),
    (
        "AF002",
        "import importlib\nimportlib.import_module(mod)\n",
        "import importlib\nimportlib.import_module('json')\n",
    ),
    ("AF002", "import importlib.util\n", "import importlib\n"),
    (
        "AF002",
        "import sys\nsys.modules['x'] = m\n",
        "import sys\nsys.argv\n",
    ),
    (
        "AF101",
        "().__class__.__mro__[1].__subclasses__()\n",
        "type(x).__name__\n",
    ),
    ("AF101", "f.__globals__['os']\n", "f.__name__\n"),
    (
        "AF101",
        "g = (x for x in []).gi_frame.f_back.f_globals\n",
        "g = (x for x in [])\n",
    ),
    ("AF102", "getattr(obj, name)\n", "getattr(obj, 'name')\n"),
    (
        "AF102",
        "setattr(obj, '__class__', C)\n",
        "setattr(obj, 'size', 3)\n",
    ),
    ("AF102", "delattr(obj, 'a' + b)\n", "delattr(obj, 'a')\n"),
    ("AF103", "globals()['x'] = 1\n", "print(globals()['x'])\n"),
    (
        "AF103",
        "g = globals()\ng['x'] = 1\n",
        "g = dict()\ng['x'] = 1\n",
    ),
    ("AF103", "vars(obj).update(d)\n", "vars(obj).get('a')\n"),
    ("AF104", "eval('1 + 1')\n", "int('1') + 1\n"),
    (
        "AF104",
        "c = compile(src, 'f', 'exec')\n",
        "import re\nc = re.compile(src)\n",
    ),
    ("AF104", "f = exec\n", "f = print\n"),
    (
        "AF105",
        "C = type('C', (object,), {'x': 1})\n",
        "t = type(obj)\n",
    ),
    (
        "AF105",
        "f = type(lambda: 0)(code, {})\n",
        "f = type(obj).__name__\n",
    ),
    (
        "AF105",
        "import types\ntypes.FunctionType(code, {})\n",
        "import types\ntypes.SimpleNamespace(a=1)\n",
    ),
    ("AF106", "breakpoint()\n", "print('done')\n"),
    (
        "AF107",
        "name = input('name? ')\n",
        "name = config['name']\n",
    ),
    ("AF108", "import ctypes\n", "import json\n"),
    (
        "AF108",
        "from ctypes import CDLL\n",
        "from json import dumps\n",
    ),
    ("AF109", "import signal\n", "import json\n"),
    (
        "AF109",
        "import os\nos.fork()\n",
        "import os\nos.getpid()\n",
    ),
    ("AF109", "import resource\n", "import json\n"),
    (
        "AF110",
        "import base64\nexec(base64.b64decode(blob))\n",
        "import base64\ndata = base64.b64decode(blob)\n",
    ),
    (
        "AF110",
        "import codecs\ns = codecs.decode(blob, 'rot13')\neval(s)\n",
        "import codecs\ns = codecs.decode(blob, 'rot13')\nprint(s)\n",
    ),
    (
        "AF111",
        "'{0.__class__.__init__.__globals__}'.format(x)\n",
        "'{0.name}'.format(x)\n",
    ),
    (
        "AF111",
        "s = f'{x.__init__}'\n",
        "s = f'{type(self).__name__}({self.x!r})'\n",
    ),
    (
        "AF111",
        "'{0.__init__.__globals__}'.format(f)\n",
        "'{0.__class__.__name__}'.format(f)\n",
    ),
];

#[test]
fn every_rule_has_a_positive_and_a_negative_case() {
    let mut failures = Vec::new();
    for (id, positive, negative) in CASES {
        let pos = ids(positive);
        if !pos.contains(id) {
            failures.push(format!("{id} did not fire on:\n{positive}\n(got {pos:?})"));
        }
        let neg = ids(negative);
        if neg.contains(id) {
            failures.push(format!(
                "{id} fired on negative:\n{negative}\n(got {neg:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn every_bandit_and_af_rule_is_covered_by_a_case() {
    let covered: std::collections::BTreeSet<&str> = CASES.iter().map(|c| c.0).collect();
    let missing: Vec<&str> = aetherflow_code_safety::rules::catalog::ALL
        .iter()
        .map(|r| r.id)
        .filter(|id| !covered.contains(id) && *id != "AF001")
        .collect();
    assert!(missing.is_empty(), "rules without fixtures: {missing:?}");
}
