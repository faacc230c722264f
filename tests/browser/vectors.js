// Runs the page's verifier (`/assets/verify.js`) over the shared test vectors inside the browser;
// called by tests/browser.rs through WebDriver's executeAsyncScript. Arguments: the OCMF
// vectors, the inclusion vectors, the consistency vectors, the callback. Returns each vector's
// verdict; the Rust test compares them with the expected ones.
const [ocmf, inclusion, consistency, done] = arguments;
import("/assets/verify.js").then(
  async (v) => {
    const bytes = (s) => {
      try {
        return v.fromBase64(s);
      } catch {
        return null;
      }
    };
    const accepts = async (check) => {
      try {
        await check();
        return true;
      } catch {
        return false;
      }
    };
    const out = { ocmf: [], inclusion: [], consistency: [] };
    for (const x of ocmf) {
      let verdict;
      try {
        verdict = await v.verifyOcmf(v.parseOcmf(x.record), v.fromHex(x.publicKey));
      } catch (e) {
        verdict = "error: " + e.message;
      }
      out.ocmf.push({ name: x.name, verdict });
    }
    for (const x of inclusion) {
      const ok = await accepts(() =>
        v.verifyInclusion(x.leafIdx, x.treeSize, bytes(x.leafHash), (x.proof || []).map(bytes), bytes(x.root)),
      );
      out.inclusion.push({ desc: x.desc, accepted: ok });
    }
    for (const x of consistency) {
      const ok = await accepts(() =>
        v.verifyConsistency(x.size1, x.size2, bytes(x.root1), bytes(x.root2), (x.proof || []).map(bytes)),
      );
      out.consistency.push({ desc: x.desc, accepted: ok });
    }
    done(out);
  },
  (e) => done({ error: String(e) }),
);
