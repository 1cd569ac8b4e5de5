// The microphone level meter: an AnalyserNode on the mic stream, drawn as a bar. The
// accessible value is updated a few times a second, not every frame, so assistive
// technology is not flooded.

const ARIA_INTERVAL_MS = 500;

export class LevelMeter {
  constructor(element) {
    this.element = element;
    this.bar = element.querySelector("[data-voice-meter-bar]") || element;
    this.context = null;
    this.frame = 0;
    this.lastAria = 0;
  }

  start(stream) {
    this.stop();
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    if (!AudioContextClass) return;
    this.context = new AudioContextClass();
    const source = this.context.createMediaStreamSource(stream);
    const analyser = this.context.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const draw = (now) => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const sample of samples) sum += sample * sample;
      const rms = Math.sqrt(sum / samples.length);
      // Speech sits around -40..-10 dBFS: map that range onto the bar.
      const db = 20 * Math.log10(rms || 1e-8);
      const level = Math.max(0, Math.min(100, Math.round(((db + 60) / 50) * 100)));
      this.bar.style.setProperty("--level", `${level}%`);
      if (now - this.lastAria > ARIA_INTERVAL_MS) {
        this.element.setAttribute("aria-valuenow", String(level));
        this.lastAria = now;
      }
      this.frame = requestAnimationFrame(draw);
    };
    this.frame = requestAnimationFrame(draw);
  }

  stop() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    if (this.context) {
      this.context.close().catch(() => {});
      this.context = null;
    }
    this.bar.style.setProperty("--level", "0%");
    this.element.setAttribute("aria-valuenow", "0");
  }
}
