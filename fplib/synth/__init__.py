"""Synthetic audio, generated deterministically from seeds: songs, background noises, room impulse responses,
and the built-in demo corpus written from them.

=====================  ====================================================================
module                 what it makes
=====================  ====================================================================
:mod:`~.compose`       the musical plan of a song (form, harmony, melody, bass and drum events)
:mod:`~.music`         songs: the plan played by random instruments and mixed (``synth_song``)
:mod:`~.noise`         background noises of :data:`~.noise.NOISE_KINDS` (``synth_noise``)
:mod:`~.rooms`         room impulse responses simulated by pyroomacoustics (``simulate_rir``)
:mod:`~.demo`          the demo corpus on disk (``CorpusSpec``, ``make_demo_corpus``, ``demo_corpus``)
:mod:`~.dsp`           the signal helpers they share
=====================  ====================================================================

Each name has one import path, its module's; this package imports none of them.
"""
