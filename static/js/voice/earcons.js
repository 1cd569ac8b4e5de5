// Short Web Audio tones that confirm what happened without words: the call connected,
// a tool call succeeded or failed. Sounds are synthesised, so there are no files to load.

const TONES = {
  connect: [
    { freq: 523.25, start: 0, duration: 0.09 },
    { freq: 783.99, start: 0.1, duration: 0.14 },
  ],
  success: [
    { freq: 659.25, start: 0, duration: 0.08 },
    { freq: 987.77, start: 0.09, duration: 0.12 },
  ],
  failure: [
    { freq: 392.0, start: 0, duration: 0.12 },
    { freq: 261.63, start: 0.14, duration: 0.2 },
  ],
  hangup: [
    { freq: 587.33, start: 0, duration: 0.08 },
    { freq: 392.0, start: 0.09, duration: 0.12 },
  ],
};

const PEAK_GAIN = 0.12;

export class Earcons {
  constructor() {
    this.context = null;
  }

  // Browsers only let an AudioContext start from a user gesture: call this from a click.
  unlock() {
    if (!this.context) {
      const AudioContextClass = window.AudioContext || window.webkitAudioContext;
      if (!AudioContextClass) return;
      this.context = new AudioContextClass();
    }
    if (this.context.state === "suspended") {
      this.context.resume().catch(() => {});
    }
  }

  play(name) {
    const tones = TONES[name];
    if (!tones || !this.context) return;
    const now = this.context.currentTime + 0.01;
    for (const tone of tones) {
      const oscillator = this.context.createOscillator();
      const gain = this.context.createGain();
      oscillator.type = "sine";
      oscillator.frequency.value = tone.freq;
      // A short attack and exponential release keep the tone from clicking.
      const begin = now + tone.start;
      const end = begin + tone.duration;
      gain.gain.setValueAtTime(0.0001, begin);
      gain.gain.exponentialRampToValueAtTime(PEAK_GAIN, begin + 0.012);
      gain.gain.exponentialRampToValueAtTime(0.0001, end);
      oscillator.connect(gain).connect(this.context.destination);
      oscillator.start(begin);
      oscillator.stop(end + 0.02);
    }
  }

  close() {
    if (this.context) {
      this.context.close().catch(() => {});
      this.context = null;
    }
  }
}
