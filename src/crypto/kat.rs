//! Known-answer tests (unit tests: the wrappers are crate-private) for the
//! crypto wrappers: AES-256-GCM-SIV vectors of RFC 8452 Appendix C.2 through
//! `SivCipher` (AWS-LC) and through the reference implementation
//! (RustCrypto), and HKDF-SHA256 test cases of RFC 5869 Appendix A through
//! `hkdf_sha256_into`.

use super::reference::ReferenceSivCipher;
use super::{NONCE_LEN, Secret32, SivCipher, hkdf_sha256_into};

/// (key, nonce, aad, plaintext, ciphertext || tag), hex; RFC 8452 Appendix C.2.
const AES_256_GCM_SIV: &[(&str, &str, &str, &str, &str)] = &[
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "",
        "07f5f4169bbf55a8400cd47ea6fd400f",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "0100000000000000",
        "c2ef328e5c71c83b843122130f7364b761e0b97427e3df28",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "010000000000000000000000",
        "9aab2aeb3faa0a34aea8e2b18ca50da9ae6559e48fd10f6e5c9ca17e",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "01000000000000000000000000000000",
        "85a01b63025ba19b7fd3ddfc033b3e76c9eac6fa700942702e90862383c6c366",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "0100000000000000000000000000000002000000000000000000000000000000",
        "4a6a9db4c8c6549201b9edb53006cba821ec9cf850948a7c86c68ac7539d027fe819e63abcd020b006a976397632eb5d",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "010000000000000000000000000000000200000000000000000000000000000003000000000000000000000000000000",
        "c00d121893a9fa603f48ccc1ca3c57ce7499245ea0046db16c53c7c66fe717e39cf6c748837b61f6ee3adcee17534ed5790bc96880a99ba804bd12c0e6a22cc4",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "01000000000000000000000000000000020000000000000000000000000000000300000000000000000000000000000004000000000000000000000000000000",
        "c2d5160a1f8683834910acdafc41fbb1632d4a353e8b905ec9a5499ac34f96c7e1049eb080883891a4db8caaa1f99dd004d80487540735234e3744512c6f90ce112864c269fc0d9d88c61fa47e39aa08",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "01",
        "0200000000000000",
        "1de22967237a813291213f267e3b452f02d01ae33e4ec854",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "01",
        "020000000000000000000000",
        "163d6f9cc1b346cd453a2e4cc1a4a19ae800941ccdc57cc8413c277f",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "01",
        "02000000000000000000000000000000",
        "c91545823cc24f17dbb0e9e807d5ec17b292d28ff61189e8e49f3875ef91aff7",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "01",
        "0200000000000000000000000000000003000000000000000000000000000000",
        "07dad364bfc2b9da89116d7bef6daaaf6f255510aa654f920ac81b94e8bad365aea1bad12702e1965604374aab96dbbc",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "01",
        "020000000000000000000000000000000300000000000000000000000000000004000000000000000000000000000000",
        "c67a1f0f567a5198aa1fcc8e3f21314336f7f51ca8b1af61feac35a86416fa47fbca3b5f749cdf564527f2314f42fe2503332742b228c647173616cfd44c54eb",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "01",
        "02000000000000000000000000000000030000000000000000000000000000000400000000000000000000000000000005000000000000000000000000000000",
        "67fd45e126bfb9a79930c43aad2d36967d3f0e4d217c1e551f59727870beefc98cb933a8fce9de887b1e40799988db1fc3f91880ed405b2dd298318858467c895bde0285037c5de81e5b570a049b62a0",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "010000000000000000000000",
        "02000000",
        "22b3f4cd1835e517741dfddccfa07fa4661b74cf",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "010000000000000000000000000000000200",
        "0300000000000000000000000000000004000000",
        "43dd0163cdb48f9fe3212bf61b201976067f342bb879ad976d8242acc188ab59cabfe307",
    ),
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "030000000000000000000000",
        "0100000000000000000000000000000002000000",
        "030000000000000000000000000000000400",
        "462401724b5ce6588d5a54aae5375513a075cfcdf5042112aa29685c912fc2056543",
    ),
    (
        "e66021d5eb8e4f4066d4adb9c33560e4f46e44bb3da0015c94f7088736864200",
        "e0eaf5284d884a0e77d31646",
        "",
        "",
        "169fbb2fbf389a995f6390af22228a62",
    ),
    (
        "bae8e37fc83441b16034566b7a806c46bb91c3c5aedb64a6c590bc84d1a5e269",
        "e4b47801afc0577e34699b9e",
        "4fbdc66f14",
        "671fdd",
        "0eaccb93da9bb81333aee0c785b240d319719d",
    ),
    (
        "6545fc880c94a95198874296d5cc1fd161320b6920ce07787f86743b275d1ab3",
        "2f6d1f0434d8848c1177441f",
        "6787f3ea22c127aaf195",
        "195495860f04",
        "a254dad4f3f96b62b84dc40c84636a5ec12020ec8c2c",
    ),
    (
        "d1894728b3fed1473c528b8426a582995929a1499e9ad8780c8d63d0ab4149c0",
        "9f572c614b4745914474e7c7",
        "489c8fde2be2cf97e74e932d4ed87d",
        "c9882e5386fd9f92ec",
        "0df9e308678244c44bc0fd3dc6628dfe55ebb0b9fb2295c8c2",
    ),
    (
        "a44102952ef94b02b805249bac80e6f61455bfac8308a2d40d8c845117808235",
        "5c9e940fea2f582950a70d5a",
        "0da55210cc1c1b0abde3b2f204d1e9f8b06bc47f",
        "1db2316fd568378da107b52b",
        "8dbeb9f7255bf5769dd56692404099c2587f64979f21826706d497d5",
    ),
    (
        "9745b3d1ae06556fb6aa7890bebc18fe6b3db4da3d57aa94842b9803a96e07fb",
        "6de71860f762ebfbd08284e4",
        "f37de21c7ff901cfe8a69615a93fdf7a98cad481796245709f",
        "21702de0de18baa9c9596291b08466",
        "793576dfa5c0f88729a7ed3c2f1bffb3080d28f6ebb5d3648ce97bd5ba67fd",
    ),
    (
        "b18853f68d833640e42a3c02c25b64869e146d7b233987bddfc240871d7576f7",
        "028ec6eb5ea7e298342a94d4",
        "9c2159058b1f0fe91433a5bdc20e214eab7fecef4454a10ef0657df21ac7",
        "b202b370ef9768ec6561c4fe6b7e7296fa85",
        "857e16a64915a787637687db4a9519635cdd454fc2a154fea91f8363a39fec7d0a49",
    ),
    (
        "3c535de192eaed3822a2fbbe2ca9dfc88255e14a661b8aa82cc54236093bbc23",
        "688089e55540db1872504e1c",
        "734320ccc9d9bbbb19cb81b2af4ecbc3e72834321f7aa0f70b7282b4f33df23f167541",
        "ced532ce4159b035277d4dfbb7db62968b13cd4eec",
        "626660c26ea6612fb17ad91e8e767639edd6c9faee9d6c7029675b89eaf4ba1ded1a286594",
    ),
];

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// Either implementation, behind one face.
trait Aead {
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], pt: &[u8]) -> crate::Result<Vec<u8>>;
    fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8]) -> crate::Result<Vec<u8>>;
}

impl Aead for SivCipher {
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], pt: &[u8]) -> crate::Result<Vec<u8>> {
        SivCipher::seal(self, nonce, aad, pt)
    }
    fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8]) -> crate::Result<Vec<u8>> {
        SivCipher::open(self, nonce, aad, sealed)
    }
}

impl Aead for ReferenceSivCipher {
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], pt: &[u8]) -> crate::Result<Vec<u8>> {
        ReferenceSivCipher::seal(self, nonce, aad, pt)
    }
    fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8]) -> crate::Result<Vec<u8>> {
        ReferenceSivCipher::open(self, nonce, aad, sealed)
    }
}

/// The store's cipher and the reference, for one key.
fn ciphers(key_hex: &str) -> [(&'static str, Box<dyn Aead>); 2] {
    let key: [u8; 32] = h(key_hex).try_into().unwrap();
    [
        (
            "aws-lc",
            Box::new(SivCipher::new(&Secret32::from_bytes(key))),
        ),
        (
            "rustcrypto",
            Box::new(ReferenceSivCipher::new(&Secret32::from_bytes(key))),
        ),
    ]
}

#[test]
fn rfc8452_aes_256_gcm_siv_seal_matches_vectors() {
    assert!(AES_256_GCM_SIV.len() >= 10, "vector table truncated");
    for (i, (key, nonce, aad, pt, ct)) in AES_256_GCM_SIV.iter().enumerate() {
        let nonce: [u8; 12] = h(nonce).try_into().unwrap();
        for (name, c) in ciphers(key) {
            let sealed = c.seal(&nonce, &h(aad), &h(pt)).unwrap();
            assert_eq!(hex::encode(&sealed), *ct, "{name} vector {i}");
        }
    }
}

#[test]
fn rfc8452_aes_256_gcm_siv_open_matches_vectors_and_rejects_tampering() {
    for (i, (key, nonce, aad, pt, ct)) in AES_256_GCM_SIV.iter().enumerate() {
        let nonce: [u8; 12] = h(nonce).try_into().unwrap();
        let sealed = h(ct);
        for (name, c) in ciphers(key) {
            assert_eq!(
                c.open(&nonce, &h(aad), &sealed).unwrap(),
                h(pt),
                "{name} vector {i}"
            );
            for bit in [0usize, sealed.len() * 8 - 1] {
                let mut bad = sealed.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    c.open(&nonce, &h(aad), &bad).is_err(),
                    "{name} vector {i} bit {bit}"
                );
            }
            let mut bad_aad = h(aad);
            bad_aad.push(0);
            assert!(
                c.open(&nonce, &bad_aad, &sealed).is_err(),
                "{name} vector {i} aad"
            );
        }
    }
}

#[test]
fn open_rejects_input_shorter_than_a_tag() {
    for (name, c) in ciphers(AES_256_GCM_SIV[0].0) {
        assert!(c.open(&[0; 12], b"", &[0; 15]).is_err(), "{name}");
        assert!(c.open(&[0; 12], b"", &[]).is_err(), "{name}");
    }
}

/// RFC 5869 Appendix A: (ikm, salt, info, okm), hex. Cases 1-3.
const HKDF_SHA256: &[(&str, &str, &str, &str)] = &[
    (
        "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f",
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
        "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        "",
        "",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
];

#[test]
fn rfc5869_hkdf_sha256_vectors() {
    for (i, (ikm, salt, info, okm)) in HKDF_SHA256.iter().enumerate() {
        let want = h(okm);
        let mut got = vec![0u8; want.len()];
        // Split info in two parts to exercise the multi-part form.
        let info = h(info);
        let (a, b) = info.split_at(info.len() / 2);
        hkdf_sha256_into(&h(ikm), &h(salt), &[a, b], &mut got);
        assert_eq!(hex::encode(&got), *okm, "case {}", i + 1);
    }
}
