// Each step of a client session has its own deadline, far beyond what it takes here, so a step
// that never ends fails naming itself instead of running into the test's overall timeout.
const STEP_MS = 60000;

function step(name, promise) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`step "${name}" did not finish within ${STEP_MS} ms`)), STEP_MS);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

module.exports = { step, STEP_MS };
