import time, torch, numpy as np
def test_prof(full_case_name, load_case, fixture_generator):
    z = load_case(full_case_name)
    t = {k: torch.from_numpy(z[k]) for k in ("src_in", "pose_src", "pose_tgt", "mask_prior", "trans_in")}
    for i in range(3):
        t0=time.perf_counter()
        with torch.no_grad():
            out = fixture_generator.forward_intermediates(t["src_in"], t["pose_src"], t["pose_tgt"], t["mask_prior"], t["trans_in"])
        t1=time.perf_counter()
        print(full_case_name, i, round(t1-t0,3), torch.get_num_threads())
