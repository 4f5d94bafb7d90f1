"bench/latent_fid.py and bench/audio_eval.py write what they finished after every phase: a GPU lease cut short keeps it."
import json
import pytest

pytestmark = pytest.mark.usefixtures('one_thread')


class Cut(Exception): "The lease ended here."


def _cut(*args, **kwargs): raise Cut()


def test_latent_fid_keeps_the_classifier_and_vae_when_cut_before_the_latents(tmp_path, load_script, monkeypatch):
    bench = load_script('bench/latent_fid.py')
    monkeypatch.setattr(bench, 'cached_latents', _cut)
    out = tmp_path/'latent.json'
    with pytest.raises(Cut): bench.main(['--quick', '--out', str(out), '--cache', str(tmp_path/'lat'), '--no-progress'])
    res = json.loads(out.read_text())
    assert 0 <= res['fid_classifier']['test_accuracy'] <= 1 and res['vae']['test_mse'] > 0 and res['vae']['test_psnr_db'] > 0
    assert 'latents' not in res and 'fid' not in res and 'finished' not in res   # a partial file says so


def test_audio_eval_keeps_the_round_trip_when_cut_before_the_classifier(tmp_path, load_script, monkeypatch):
    bench = load_script('bench/audio_eval.py')
    monkeypatch.setattr(bench, 'train_digit_classifier', _cut)
    out = tmp_path/'audio.json'
    with pytest.raises(Cut): bench.main(['--quick', '--out', str(out)])
    res = json.loads(out.read_text())
    assert res['round_trip']['n_clips'] == 40 and set(res['round_trip']) >= {'1 GL iterations', '64 GL iterations'}
    assert 'classifier' not in res and 'total_seconds' not in res and res['quick'] is True
